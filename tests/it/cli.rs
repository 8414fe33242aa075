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

/// A file value reaches the component it configures (the sink's own check of --batch-rows
/// refuses the file's 0), below the environment; a key that is no option of the subcommand,
/// or a value its option cannot take, stops the binary (exit 2) naming file and key.
#[test]
fn config_file_reaches_the_component_and_refuses_unknown_keys() {
    let env = Env::new("cfg2");
    let dir = std::env::temp_dir().join(unique("cfg2"));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("sink.toml");
    let f = file.to_str().unwrap();
    let stderr = |out: &std::process::Output| String::from_utf8_lossy(&out.stderr).into_owned();

    std::fs::write(&file, "batch-rows = 0\n").unwrap();
    let out = env.cmd(&["--config", f, "sink"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(
            "--batch-rows / FEEDBACK_SINK_BATCH_ROWS is 0; it must be between 1 and 1048575"
        ),
        "{}",
        stderr(&out)
    );
    // The environment wins over the file (and reaches the same check).
    let out = env
        .cmd(&["--config", f, "sink"])
        .env("FEEDBACK_SINK_BATCH_ROWS", "2000000")
        .output()
        .unwrap();
    assert!(
        stderr(&out).contains("FEEDBACK_SINK_BATCH_ROWS is 2000000;"),
        "{}",
        stderr(&out)
    );

    std::fs::write(&file, "batch_rows = 1000\n").unwrap();
    let out = env.cmd(&["--config", f, "sink"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).starts_with(&format!(
            "error: config file {f}: unknown key \"batch_rows\" for `feedback sink` (did you mean \"batch-rows\"?); known keys are brokers, "
        )),
        "{}",
        stderr(&out)
    );

    std::fs::write(&file, "batch-rows = \"many\"\n").unwrap();
    let out = env.cmd(&["--config", f, "sink"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert_eq!(
        stderr(&out).trim(),
        format!("error: config file {f}: key \"batch-rows\" of `feedback sink`: invalid value 'many' for '--batch-rows <BATCH_ROWS>': invalid digit found in string")
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Every error class of `feedback ownership check`, with the exact message, file and line;
/// a sample from a file and from a topic; `feedback explain`.
#[test]
fn ownership_check_reports_every_error_class_and_what_a_sample_proves() {
    let env = Env::new("own2");
    let dir = std::env::temp_dir().join(unique("own2"));
    std::fs::create_dir_all(&dir).unwrap();
    let files = [
        // Claims on different fields: only an event can prove they compete.
        ("a.toml", "team = \"a\"\n\n[[claim]]\nservice = \"checkout-api\"\nchannel = \"web\"\n\n[[claim]]\nkind = \"call\"\n"),
        ("b.toml", "team = \"b\"\n\n[[claim]]\nkind = \"call\"\nregion = \"nl\"\n\n[[claim]]\nchannel = \"web\"\nproduct = \"x*\"\n"),
        // Unknown field (a typo).
        ("c.toml", "team = \"c\"\n[[claim]]\nservice = \"x\"\nchanel = \"web\"\n"),
        // Unknown channel and metric values.
        ("d.toml", "team = \"d\"\n[[claim]]\nchannel = \"fax\"\n[[claim]]\nmetric = [\"csat\", \"nsp\"]\n"),
        // Syntax error.
        ("e.toml", "team = \"e\"\n[[claim]\nservice = \"x\"\n"),
        // Same fields, overlapping values, equal priority: a conflict without any sample.
        ("f.toml", "team = \"f\"\n[[claim]]\nkind = [\"call\", \"chat\"]\n"),
    ];
    for (name, text) in files {
        std::fs::write(dir.join(name), text).unwrap();
    }
    let sample = dir.join("sample.jsonl");
    std::fs::write(
        &sample,
        [
            r#"{"interaction_id":"s1","occurred_at":"2026-11-28T10:00:00Z","service":"checkout-api","channel":"web","kind":"order","customer_ref":"c","product":"x1"}"#,
            r#"{"interaction_id":"s2","occurred_at":"2026-11-28T10:00:00Z","service":"other","channel":"phone","kind":"call","customer_ref":"c","region":"nl"}"#,
            r#"{"interaction_id":"s3","occurred_at":"2026-11-28T10:00:00Z","service":"other","channel":"phone","kind":"call","customer_ref":"c","region":"de"}"#,
            r#"{"rating_id":"s4","occurred_at":"2026-11-28T10:00:00Z","service":"survey","channel":"email","metric":"csat","score":3,"customer_ref":"c"}"#,
        ]
        .join("\n"),
    )
    .unwrap();
    let d = dir.display();
    let out = env
        .cmd(&[
            "ownership",
            "check",
            "--ownership-dir",
            dir.to_str().unwrap(),
            "--sample",
            sample.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(1), "{text}");
    let lines: Vec<&str> = text.lines().collect();
    let want = vec![
        format!("{d}/c.toml:4: error: unknown field `chanel`, expected one of `service`, `channel`, `kind`, `product`, `region`, `metric`, `priority`"),
        format!("{d}/d.toml:3: error: claim 0: unknown channel \"fax\"; expected one of phone, chat, email, web, app, store, field, social, other"),
        format!("{d}/d.toml:5: error: claim 1: unknown metric \"nsp\"; expected one of csat, nps, ces"),
        format!("{d}/e.toml:2: error: unclosed array table, expected `]`"),
        format!("{d}/f.toml:2: error: claim 0 of team \"f\" and claim 1 of team \"a\" (a.toml:7) can match the same events at equal priority 0; give one a higher priority or narrow it"),
        format!("{d}/b.toml:7: error: claim 1 of team \"b\" and claim 0 of team \"a\" (a.toml:3) both match sample event s1 (channel=web, product=x1, service=checkout-api) at equal priority 0; the tie goes to \"a\" by file order only: give one a higher priority or narrow it"),
        format!("{d}/b.toml:3: error: claim 0 of team \"b\" and claim 1 of team \"a\" (a.toml:7) both match sample event s2 (kind=call, region=nl) at equal priority 0; the tie goes to \"a\" by file order only: give one a higher priority or narrow it"),
        "sample: 4 events".to_string(),
        "  a                               3   75.0%".to_string(),
        "  unclaimed (nobody)              1   25.0%".to_string(),
        "  b                               0    0.0%".to_string(),
        "  d                               0    0.0%".to_string(),
        "  f                               0    0.0%".to_string(),
        "  unclaimed e.g.: s4".to_string(),
    ];
    // c.toml does not parse, so team c is not known: 4 teams.
    assert_eq!(lines[..lines.len() - 1], want, "{text}");
    let last = lines[lines.len() - 1];
    assert!(
        last.starts_with("6 files, 4 teams, 5 claims, version sha256:")
            && last.ends_with(": 7 error(s), 0 warning(s)"),
        "{last}"
    );

    // A missing sample is a usage error (exit 2), not a finding.
    let out = env
        .cmd(&[
            "ownership",
            "check",
            "--ownership-dir",
            dir.to_str().unwrap(),
            "--sample",
            "/nonexistent.jsonl",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "error: cannot read sample file /nonexistent.jsonl: No such file or directory (os error 2)"
    );

    // The demo org against a sample read from a topic.
    env.run(&["topics", "--partitions", "1"]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let p = feedback_kafka::FeedbackProducer::new(
        &feedback_kafka::KafkaConfig {
            brokers: crate::harness::brokers(),
            extra: Vec::new(),
        },
        feedback_kafka::Topics::with_prefix(&env.prefix),
    )
    .unwrap();
    let mk = |id: &str, service: &str| feedback_events::Interaction {
        interaction_id: id.into(),
        occurred_at: 1_790_000_000_000,
        service: service.into(),
        channel: feedback_events::Channel::Web,
        kind: "order".into(),
        customer_ref: "c".into(),
        product: None,
        region: None,
        agent_id: None,
        team: None,
        attributes: Default::default(),
    };
    rt.block_on(p.send_interactions(&[
        mk("k1", "delivery-tracker"),
        mk("k2", "delivery-tracker"),
        mk("k3", "mobile-bff"),
        mk("k4", "nobody"),
    ]))
    .unwrap();
    let topic = format!("kafka:{}", env.topic("interactions"));
    let text = env.run(&["ownership", "check", "--sample", &topic]);
    for line in [
        "sample: 4 events",
        "  delivery                        2   50.0%",
        "  mobile-app                      1   25.0%",
        "  unclaimed (nobody)              1   25.0%",
        "  payments                        0    0.0%",
        "  unclaimed e.g.: k4",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }

    // explain: the decision, the version, and every claim in the order tried.
    let text = env.run(&[
        "explain",
        r#"{"interaction_id":"x1","occurred_at":"2026-11-28T10:00:00Z","service":"other","channel":"phone","kind":"call","customer_ref":"c","region":"nl"}"#,
    ]);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "event x1");
    assert!(
        lines[1].starts_with("decision: team customer-care by claim (customer-care.toml claim 0) under ownership sha256:"),
        "{text}"
    );
    assert_eq!(
        lines[2],
        "claims considered (11, highest priority first; the first match wins):"
    );
    assert_eq!(lines[3], "  payments.toml:10 claim 1 team payments priority 10: no match: kind \"call\" ∉ support_ticket, product (absent) ∉ payments*");
    assert_eq!(lines[5], "  customer-care.toml:6 claim 0 team customer-care priority 0: MATCH, chosen: kind \"call\" ∈ support_ticket|call|chat");
    assert_eq!(lines.len(), 3 + 11);
    let _ = std::fs::remove_dir_all(&dir);
}
