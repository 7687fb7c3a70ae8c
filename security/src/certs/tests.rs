use std::os::unix::fs::PermissionsExt as _;

use super::*;

fn dir() -> (tempfile::TempDir, CertsDir) {
    let t = tempfile::tempdir().unwrap();
    let d = CertsDir::new(t.path().join("certs"));
    (t, d)
}

fn hosts(h: &[&str]) -> Vec<String> {
    h.iter().map(|s| s.to_string()).collect()
}

fn parse(path: &Path) -> Vec<u8> {
    let bytes = fs::read(path).unwrap();
    let (_, pem) = x509_parser::pem::parse_x509_pem(&bytes).unwrap();
    pem.contents
}

#[test]
fn a_ca_signs_node_router_and_client_certificates_that_list_back() {
    let (_t, d) = dir();
    let ca = create_ca(&d, CA_DAYS, false).unwrap();
    assert_eq!(ca.kind, "ca");
    assert!((3648..=3650).contains(&ca.days_left), "{ca:?}");
    let node = Identity::new(Kind::Node, "store-1").unwrap();
    let router = Identity::new(Kind::Router, "router-1").unwrap();
    let alice = Identity::new(Kind::Client, "alice").unwrap();
    let n = create(
        &d,
        &node,
        &hosts(&["127.0.0.1", "localhost", "*.tessera.default.svc", "::1"]),
        LEAF_DAYS,
        false,
    )
    .unwrap();
    assert_eq!(n.identity.as_deref(), Some("node/store-1"));
    assert_eq!(
        n.hosts,
        hosts(&["127.0.0.1", "localhost", "*.tessera.default.svc", "::1"])
    );
    create(&d, &router, &hosts(&["10.0.0.7"]), 30, false).unwrap();
    let c = create(&d, &alice, &[], LEAF_DAYS, false).unwrap();
    assert!(c.hosts.is_empty());
    assert!((363..=365).contains(&c.days_left), "{c:?}");

    let listed = list(&d).unwrap();
    let summary: Vec<(String, String, Option<String>)> = listed
        .iter()
        .map(|i| (i.file.clone(), i.kind.clone(), i.identity.clone()))
        .collect();
    assert_eq!(
        summary,
        vec![
            ("ca.crt".into(), "ca".into(), None),
            (
                "client.alice.crt".into(),
                "client".into(),
                Some("client/alice".into())
            ),
            (
                "node.crt".into(),
                "node".into(),
                Some("node/store-1".into())
            ),
            (
                "router.crt".into(),
                "router".into(),
                Some("router/router-1".into())
            ),
        ]
    );
    assert!((28..=30).contains(&listed[3].days_left));

    // Each is signed by the CA.
    let ca_der = parse(&d.ca_cert());
    let (_, ca_cert) = x509_parser::parse_x509_certificate(&ca_der).unwrap();
    for id in [&node, &router, &alice] {
        let der = parse(&d.cert(id));
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        cert.verify_signature(Some(ca_cert.public_key()))
            .unwrap_or_else(|e| panic!("{id} not signed by the CA: {e}"));
    }
}

#[test]
fn keys_are_readable_by_their_owner_only() {
    let (_t, d) = dir();
    create_ca(&d, CA_DAYS, false).unwrap();
    let alice = Identity::new(Kind::Client, "alice").unwrap();
    create(&d, &alice, &[], LEAF_DAYS, false).unwrap();
    for key in [d.ca_key(), d.key(&alice)] {
        let mode = fs::metadata(&key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", key.display());
    }
    let mode = fs::metadata(d.path()).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
}

#[test]
fn nothing_is_overwritten_unless_asked() {
    let (_t, d) = dir();
    create_ca(&d, CA_DAYS, false).unwrap();
    let before = fs::read(d.ca_key()).unwrap();
    let err = create_ca(&d, CA_DAYS, false).unwrap_err();
    assert!(matches!(err, Error::Exists(_)), "{err}");
    assert!(err.to_string().contains("--overwrite"), "{err}");
    assert_eq!(
        fs::read(d.ca_key()).unwrap(),
        before,
        "the key is untouched"
    );

    // A stray key makes a creation refuse before anything is written.
    let bob = Identity::new(Kind::Client, "bob").unwrap();
    fs::write(d.key(&bob), "not mine").unwrap();
    assert!(matches!(
        create(&d, &bob, &[], LEAF_DAYS, false),
        Err(Error::Exists(_))
    ));
    assert!(!d.cert(&bob).exists(), "no certificate written");

    create_ca(&d, CA_DAYS, true).unwrap();
    assert_ne!(fs::read(d.ca_key()).unwrap(), before, "replaced when asked");
    create(&d, &bob, &[], LEAF_DAYS, true).unwrap();
    let mode = fs::metadata(d.key(&bob)).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "an overwritten key is made private too");
}

#[test]
fn bad_input_is_refused_with_a_clear_error_and_writes_nothing() {
    let (_t, d) = dir();
    let node = Identity::new(Kind::Node, "n1").unwrap();
    let err = create(&d, &node, &hosts(&["localhost"]), LEAF_DAYS, false).unwrap_err();
    assert!(err.to_string().contains("ca.crt does not exist"), "{err}");
    assert!(err.to_string().contains("create-ca"), "{err}");
    assert!(!d.path().exists(), "nothing written");

    create_ca(&d, CA_DAYS, false).unwrap();
    let alice = Identity::new(Kind::Client, "alice").unwrap();
    for (id, h, days, expect) in [
        (&node, vec![], LEAF_DAYS, "at least one --host"),
        (&alice, hosts(&["localhost"]), LEAF_DAYS, "names no host"),
        (
            &node,
            hosts(&["bad host"]),
            LEAF_DAYS,
            "neither an IP address nor a DNS name",
        ),
        (&node, hosts(&["-x.example"]), LEAF_DAYS, "neither"),
        (&node, hosts(&["a..b"]), LEAF_DAYS, "neither"),
        (&node, hosts(&["localhost"]), 0, "--days"),
    ] {
        let err = create(&d, id, &h, days, false).unwrap_err();
        assert!(
            err.to_string().contains(expect),
            "{err} (expected {expect})"
        );
        assert!(!d.cert(id).exists() && !d.key(id).exists());
    }
    assert!(matches!(
        Identity::new(Kind::Client, "../etc/passwd"),
        Err(Error::InvalidArgument(_))
    ));

    // A file that is not a certificate is reported, not skipped silently.
    fs::write(d.path().join("junk.crt"), "hello").unwrap();
    let err = list(&d).unwrap_err();
    assert!(err.to_string().contains("junk.crt"), "{err}");
}

#[test]
fn listing_a_missing_directory_says_how_to_start() {
    let (_t, d) = dir();
    let err = list(&d).unwrap_err();
    assert!(err.to_string().contains("create-ca"), "{err}");
}
