//! Every config under config/examples/ passes `llm-proxy --check-config`,
//! given values for the variables it requires, and never prints them.

use std::process::Command;

/// `${NAME}` references without a default.
fn required_vars(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("${") {
        let body = &rest[i + 2..];
        let end = body.find('}').expect("closed ${");
        let expr = &body[..end];
        if !expr.contains(":-") {
            out.push(expr.to_string());
        }
        rest = &body[end..];
    }
    out
}

#[test]
fn every_example_config_passes_check_config() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/config/examples");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    let names: Vec<String> = files
        .iter()
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    for want in [
        "openai",
        "anthropic",
        "azure",
        "gemini",
        "groq",
        "mistral",
        "deepseek",
        "openrouter",
        "together",
        "ollama",
        "vllm",
        "mixed",
    ] {
        assert!(
            names.iter().any(|n| n == want),
            "missing example {want}.yaml"
        );
    }
    for path in &files {
        let text = std::fs::read_to_string(path).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_llm-proxy"));
        cmd.args(["--check-config", "--config"]).arg(path);
        let vars = required_vars(&text);
        for v in &vars {
            cmd.env(v, format!("secret-value-of-{v}"));
        }
        let out = cmd.output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{}: {stderr}", path.display());
        assert!(stdout.contains("config OK"), "{}: {stdout}", path.display());
        for v in vars.iter().filter(|v| v.ends_with("_KEY")) {
            assert!(
                !stdout.contains(&format!("secret-value-of-{v}")),
                "{} printed {v}: {stdout}",
                path.display()
            );
        }
    }
}
