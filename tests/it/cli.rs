//! The command line: ownership check diagnostics and exit codes, config file layering.

use crate::harness::{repo_root, unique, Env};

#[test]
fn ownership_check_passes_on_the_demo_org_and_points_at_file_and_line_on_errors() {
    let env = Env::new("own");
    let out = env.run(&["ownership", "check"]);
    assert!(
        out.contains("9 files, 9 teams, 11 claims") && out.contains("0 error(s)"),
        "{out}"
    );

    let dir = std::env::temp_dir().join(unique("own"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("a.toml"),
        "team = \"a\"\n\n[[claim]]\nservice = \"checkout-*\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("b.toml"),
        "team = \"b\"\n\n[[claim]]\nservice = \"checkout-api\"\n\n[[claim]]\nchannel = \"fax\"\n",
    )
    .unwrap();
    let out = env
        .cmd(&[
            "ownership",
            "check",
            "--ownership-dir",
            dir.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    let d = dir.display();
    assert!(
        text.contains(&format!(
            "{d}/b.toml:7: error: claim 1: unknown channel \"fax\""
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!("{d}/b.toml:3: error: claim 0 of team \"b\" and claim 0 of team \"a\" (a.toml:3) can match the same events at equal priority 0")),
        "{text}"
    );
    assert!(text.contains("2 error(s)"), "{text}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn config_file_sits_below_environment_and_flags() {
    let env = Env::new("cfg");
    let dir = std::env::temp_dir().join(unique("cfg"));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("feedback.toml");
    // The file names an ownership directory that does not exist...
    std::fs::write(&file, "ownership-dir = \"/nonexistent/ownership\"\n").unwrap();
    let out = env
        .cmd(&["--config", file.to_str().unwrap(), "ownership", "check"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("cannot read ownership directory /nonexistent/ownership"));
    // ...the environment wins over the file...
    let good = repo_root().join("deploy/ownership");
    let out = env
        .cmd(&["--config", file.to_str().unwrap(), "ownership", "check"])
        .env("FEEDBACK_OWNERSHIP_DIR", &good)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // ...and a flag wins over both.
    let out = env
        .cmd(&[
            "--config",
            file.to_str().unwrap(),
            "ownership",
            "check",
            "--ownership-dir",
            "/nonexistent/flag",
        ])
        .env("FEEDBACK_OWNERSHIP_DIR", &good)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/flag"));
    // A broken file is named.
    std::fs::write(&file, "ownership-dir = \n").unwrap();
    let out = env
        .cmd(&["--config", file.to_str().unwrap(), "ownership", "check"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains(&format!("config file {} is not valid TOML", file.display())));
    let _ = std::fs::remove_dir_all(&dir);
}
