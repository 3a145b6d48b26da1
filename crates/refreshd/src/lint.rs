//! `refreshd lint`: prints every problem of a form_config.json.

use crate::LintFormat;
use anyhow::{Context, Result};
use refreshd_rules::form_config::{check_document, LintContext, Severity};
use serde_json::json;
use std::path::Path;
use std::process::ExitCode;

pub fn run(path: &Path, system_app: bool, format: LintFormat) -> Result<ExitCode> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let text = String::from_utf8(bytes).map_err(|e| {
        anyhow::anyhow!(
            "{} is not UTF-8 (byte {})",
            path.display(),
            e.utf8_error().valid_up_to()
        )
    })?;
    let report = check_document(&text, LintContext { system_app });
    let errors = report.errors().count();
    let warnings = report.warnings().count();
    match format {
        LintFormat::Json => {
            let issues: Vec<_> = report
                .issues
                .iter()
                .map(|i| {
                    json!({
                        "severity": match i.severity { Severity::Error => "error", Severity::Warning => "warning" },
                        "path": i.path,
                        "code": i.code,
                        "rule": i.rule,
                        "message": i.message,
                        "hint": i.hint,
                    })
                })
                .collect();
            let forms = report.value.as_ref().map_or(0, Vec::len);
            let doc =
                json!({"errors": errors, "warnings": warnings, "forms": forms, "issues": issues});
            println!("{}", serde_json::to_string_pretty(&doc)?);
        }
        LintFormat::Human => {
            for issue in &report.issues {
                let severity = match issue.severity {
                    Severity::Error => "error",
                    Severity::Warning => "warning",
                };
                println!(
                    "{severity}[{}] {}: {} ({})\n    hint: {}",
                    issue.code, issue.path, issue.message, issue.rule, issue.hint
                );
            }
            println!(
                "{}: {errors} error(s), {warnings} warning(s)",
                path.display()
            );
        }
    }
    Ok(if errors > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
