//! `baton diagram`: a definition's flow as SVG or Mermaid, from its file.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use baton_workflows::run::{RunError, load};

#[derive(Debug, clap::Args)]
pub struct DiagramArgs {
    /// The definition (YAML or JSON).
    file: PathBuf,
    /// `svg` (an image) or `mermaid` (text for Markdown and Mermaid tools).
    #[arg(long, value_parser = ["svg", "mermaid"], default_value = "svg")]
    format: String,
}

pub fn run(args: &DiagramArgs) -> anyhow::Result<ExitCode> {
    let name = args.file.display().to_string();
    let source = std::fs::read_to_string(&args.file).with_context(|| format!("cannot read {name}"))?;
    let program = match load(&source, &name) {
        Ok(program) => program,
        Err(RunError::Invalid(problems)) => {
            eprintln!("{problems}");
            return Ok(ExitCode::FAILURE);
        }
        Err(other) => return Err(other.into()),
    };
    let text = match args.format.as_str() {
        "mermaid" => baton_workflows::diagram::mermaid(&program),
        _ => baton_workflows::diagram::svg(&program),
    };
    crate::write_out(&text)?;
    Ok(ExitCode::SUCCESS)
}
