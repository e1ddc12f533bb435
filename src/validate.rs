//! `baton validate`: checks definitions and reports every problem with its position.
//!
//! Exit status: 0 when no definition has an error (warnings allowed), 1 when one has, 2 when a
//! file (a definition or the manifest) cannot be read.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use baton_workflows::diagnostic::Diagnostic;
use baton_workflows::validate::{ActivityManifest, ValidateOptions, check};

#[derive(Debug, clap::Args)]
pub struct ValidateArgs {
    /// The definitions to check (YAML or JSON).
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
    /// `text`: each problem with its source line, then a summary; `json`: one JSON object per
    /// problem per line (code, severity, file, line, column, pointer, message, expected).
    #[arg(short = 'o', long = "output", value_enum, default_value = "text")]
    output: Output,
    /// Every `call:` must name something known: an unknown function is an error, not a warning.
    #[arg(long)]
    strict: bool,
    /// Check against the official Serverless Workflow 1.0 schema alone, and report each Baton
    /// extension used as an error (for definitions meant for other runtimes too).
    #[arg(long)]
    strict_spec: bool,
    /// The activities definitions may call by name, YAML or JSON:
    /// `activities: [{name, description?, input?, output?}]` (input and output: JSON Schemas).
    /// Calls to other names are errors, and each call's `with` is checked against its input.
    #[arg(long, value_name = "MANIFEST")]
    activities: Option<PathBuf>,
    /// The business calendars the engine shares (a `calendars:` mapping, as `baton run
    /// --calendars` reads): SLAs may name them without declaring them.
    #[arg(long, value_name = "FILE")]
    calendars: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Output {
    Text,
    Json,
}

const UNREADABLE: u8 = 2;

pub fn run(args: &ValidateArgs) -> anyhow::Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    let mut report = Report::default();
    let activities = match &args.activities {
        None => None,
        Some(path) => {
            let name = path.display().to_string();
            let bytes = match std::fs::read(path) {
                Ok(bytes) => bytes,
                Err(err) => {
                    eprintln!("error: cannot read the activity manifest {name}: {err}");
                    return Ok(ExitCode::from(UNREADABLE));
                }
            };
            match ActivityManifest::parse(&name, &bytes) {
                Ok(manifest) => Some(manifest),
                Err(diagnostics) => {
                    report.show(&mut out, args.output, &diagnostics, &String::from_utf8_lossy(&bytes))?;
                    report.summary(&mut out, args.output, 0)?;
                    return Ok(ExitCode::FAILURE);
                }
            }
        }
    };
    let shared_calendars = match &args.calendars {
        Some(path) => crate::run_cmd::load_calendars(path)?.names().map(str::to_owned).collect(),
        None => Vec::new(),
    };
    let options = ValidateOptions {
        strict: args.strict,
        strict_spec: args.strict_spec,
        activities,
        shared_calendars,
        ..ValidateOptions::default()
    };
    let mut unreadable = false;
    for path in &args.files {
        let name = path.display().to_string();
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(err) => {
                eprintln!("error: cannot read {name}: {err}");
                unreadable = true;
                continue;
            }
        };
        let (parsed, diagnostics) = check(&name, &bytes, &options);
        let text = match &parsed {
            Some(parsed) => parsed.text.clone(),
            None => String::from_utf8_lossy(&bytes).into_owned(),
        };
        report.show(&mut out, args.output, &diagnostics, &text)?;
    }
    report.summary(&mut out, args.output, args.files.len())?;
    Ok(if unreadable {
        ExitCode::from(UNREADABLE)
    } else if report.errors > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

#[derive(Default)]
struct Report {
    errors: usize,
    warnings: usize,
}

impl Report {
    fn show(
        &mut self,
        out: &mut impl Write,
        output: Output,
        diagnostics: &[Diagnostic],
        text: &str,
    ) -> anyhow::Result<()> {
        for diagnostic in diagnostics {
            if diagnostic.is_error() {
                self.errors += 1;
            } else {
                self.warnings += 1;
            }
            match output {
                Output::Text => writeln!(out, "{}", diagnostic.render(text))?,
                Output::Json => writeln!(out, "{}", serde_json::to_string(diagnostic)?)?,
            }
        }
        Ok(())
    }

    /// The last line of text output: what was checked and what was found.
    fn summary(&self, out: &mut impl Write, output: Output, files: usize) -> anyhow::Result<()> {
        if output == Output::Json {
            return Ok(());
        }
        let plural = |n: usize, word: &str| if n == 1 { format!("1 {word}") } else { format!("{n} {word}s") };
        let found = match (self.errors, self.warnings) {
            (0, 0) => "no problems".to_owned(),
            (errors, 0) => plural(errors, "error"),
            (0, warnings) => plural(warnings, "warning"),
            (errors, warnings) => format!("{}, {}", plural(errors, "error"), plural(warnings, "warning")),
        };
        if files == 0 {
            writeln!(out, "the activity manifest has {found}")?;
        } else {
            writeln!(out, "{} checked: {found}", plural(files, "file"))?;
        }
        Ok(())
    }
}
