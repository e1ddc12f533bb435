//! Compiles baton/v1/baton.proto with protox (pure Rust: no system protoc) and generates the
//! tonic services and clients. Messages also derive serde with camelCase names, as the HTTP
//! API spells its fields; the JSON-valued fields go through `crate::json`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "baton/v1/baton.proto";
    println!("cargo:rerun-if-changed={proto}");
    let descriptors = protox::compile([proto], ["."])?;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("baton.bin"), prost::Message::encode_to_vec(&descriptors))?;
    let json_fields = std::fs::read_to_string(proto)?
        .lines()
        .scan(String::new(), |message, line| {
            let line = line.trim();
            if let Some(name) = line.strip_prefix("message ").and_then(|rest| rest.split_whitespace().next()) {
                *message = name.to_owned();
            }
            let field = line.strip_prefix("google.protobuf.Value ").and_then(|rest| rest.split_whitespace().next());
            Some(field.map(|field| format!(".baton.v1.{message}.{field}")))
        })
        .flatten()
        .collect::<Vec<_>>();
    let mut builder = tonic_prost_build::configure().type_attribute(
        ".baton.v1",
        "#[derive(serde::Serialize, serde::Deserialize)] #[serde(rename_all = \"camelCase\", default)]",
    );
    for field in &json_fields {
        builder = builder.field_attribute(field, "#[serde(with = \"crate::json::optional\")]");
    }
    builder.compile_fds(descriptors)?;
    Ok(())
}
