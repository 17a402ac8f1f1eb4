//! Role configuration files: the shipped examples parse and pass the checks; overrides and
//! errors name the field.
#![expect(clippy::unwrap_used, reason = "tests")]

use std::path::Path;

use fapiao_system::RoleConfig;

fn example(role: &str) -> RoleConfig {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../../examples/config/{role}.toml"));
    let c: RoleConfig = toml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    c.check().unwrap();
    c
}

#[test]
fn shipped_examples_are_valid_with_ipv4_and_ipv6_listeners() {
    for role in ["tax", "platform", "cloud"] {
        let c = example(role);
        assert_eq!(c.role, role);
        assert!(
            c.listen.iter().any(|a| a.starts_with('[')),
            "{role} listens on IPv6 too"
        );
    }
}

#[test]
fn the_shipped_agent_example_is_valid_and_needs_every_peer() {
    let c = example("agent");
    assert!(c.listen.is_empty(), "an agent only calls out");
    assert!(c.admin_listen.iter().any(|a| a.starts_with('[')));
    let mut missing = c.clone();
    missing.peers.tax_url = None;
    assert_eq!(
        missing.check().unwrap_err(),
        "peers.tax_url is required for agent"
    );
    let mut no_device = c;
    no_device.devices_dir = None;
    assert!(no_device.check().unwrap_err().contains("devices_dir"));
}

#[test]
fn environment_overrides_apply() {
    let mut c = example("cloud");
    c.apply_env(|k| match k {
        "FAPIAO_LISTEN" => Some("127.0.0.1:1, [::1]:1".into()),
        "FAPIAO_DATABASE" => Some("sqlite:///tmp/x.sqlite".into()),
        "FAPIAO_PLATFORM_URL" => Some("https://p:1".into()),
        _ => None,
    });
    assert_eq!(c.listen, ["127.0.0.1:1", "[::1]:1"]);
    assert_eq!(c.database, "sqlite:///tmp/x.sqlite");
    assert_eq!(c.peers.platform_url.as_deref(), Some("https://p:1"));
    // FAPIAO_DATABASE_URL, the name replicas' deployments use, wins over the older one.
    c.apply_env(|k| match k {
        "FAPIAO_DATABASE_URL" => Some("postgres://app@db:5432/fapiao_cloud".into()),
        "FAPIAO_DATABASE" => Some("sqlite:///tmp/y.sqlite".into()),
        _ => None,
    });
    assert_eq!(c.database, "postgres://app@db:5432/fapiao_cloud");
    c.check().unwrap();
    c.database = "mysql://db/x".into();
    let err = c.check().unwrap_err();
    assert!(err.starts_with("database:"), "{err}");
}

#[test]
fn problems_name_the_field() {
    let mut c = example("platform");
    c.peers.tax_url = None;
    assert!(c.check().unwrap_err().contains("peers.tax_url"));
    let mut c = example("cloud");
    c.listen = vec!["localhost".into()];
    assert!(c.check().unwrap_err().contains("listen"));
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/config/tax.toml"),
    )
    .unwrap();
    let err = toml::from_str::<RoleConfig>(&format!("{text}\nlisten_typo = 1\n")).unwrap_err();
    assert!(err.to_string().contains("listen_typo"), "{err}");
}

/// The role configs the Kubernetes manifests ship (`deploy/kubernetes/10-config.yaml`) load
/// and pass the checks `serve` makes, with their databases on PostgreSQL.
#[test]
fn the_kubernetes_configs_are_role_configs_on_postgres() {
    let yaml = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/kubernetes/10-config.yaml"),
    )
    .unwrap();
    let mut found = Vec::new();
    let mut lines = yaml.lines().peekable();
    while let Some(line) = lines.next() {
        let Some(role) = line.trim().strip_suffix(".toml: |").map(str::to_owned) else {
            continue;
        };
        let mut text = String::new();
        while let Some(l) = lines.peek() {
            if !(l.starts_with("    ") || l.is_empty()) {
                break;
            }
            text.push_str(l.strip_prefix("    ").unwrap_or(""));
            text.push('\n');
            lines.next();
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(format!("{role}.toml"));
        std::fs::write(&path, &text).unwrap();
        let c = RoleConfig::load(&path).unwrap_or_else(|e| panic!("{role}: {e}"));
        assert_eq!(c.role, role);
        assert!(
            c.database.starts_with("postgres://"),
            "{role}: {}",
            c.database
        );
        found.push(role);
    }
    found.sort();
    assert_eq!(found, ["cloud", "platform", "tax"]);
}
