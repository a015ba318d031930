//! The syncer against what real clusters do that a friendly fake would
//! not: the MCS CRDs missing, RBAC that forbids a verb, a token refused,
//! selectors the API server answers with 400, lists in pages with a
//! continue token compacted away, a history compacted under a watch, and
//! HTTPS.

use std::time::Duration;

use meshdns_tests::fake_kube::{
    FakeKube, Options, Res, mint_pki, one_ready_slice, ready, service, service_export, slice,
};
use meshdns_tests::fleet::TempDir;
use meshdns_tests::history::History;
use meshdns_tests::{TestServer, bin, eventually};

use crate::kubernetes::{
    EXPORT, Syncer, answers, base_with_web, start_syncer, unlabelled_cart, wait_answers,
    wait_nxdomain, web_fleet, web_slice,
};

async fn wait_ready_body(syncer: &Syncer, status: u16, needle: &str) -> String {
    let what = format!("/readyz {status} with {needle:?}");
    eventually(Duration::from_secs(20), &what, || async {
        let (code, body) = syncer.readyz().await;
        (code == status && body.contains(needle)).then_some(body)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_mcs_crds_labelled_services_still_export() {
    let fake = FakeKube::start_with(Options {
        mcs: false,
        ..Options::default()
    })
    .await;
    let server = TestServer::start(&[]).await;
    let dir = TempDir::new("kube-no-mcs");
    base_with_web(&fake);
    web_slice(&fake);
    unlabelled_cart(&fake);
    let syncer = start_syncer(&fake, &server, &dir, &["--mcs"]).await;
    // The labelled Service exports although ServiceExports cannot be listed...
    wait_answers(&server, "web.shop.global", &["10.1.0.11"]).await;
    // ...and the syncer says why the MCS watcher is not there.
    let body = wait_ready_body(&syncer, 200, "serviceexports unavailable").await;
    assert!(
        body.contains("not served (404)") && body.contains("multicluster.x-k8s.io/v1alpha1"),
        "{body}"
    );
    let status = syncer.status().await;
    let unavailable = status["source"]["unavailable"]["serviceexports"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(unavailable.contains("install its CRDs"), "{status}");
    let failures = syncer
        .metric(
            "meshdns_syncer_watch_failures_total{watcher=\"serviceexports\",reason=\"not_served\"}",
        )
        .await
        .unwrap_or(0.0);
    assert!(failures >= 1.0, "404s counted: {failures}");
    assert_eq!(
        syncer
            .metric("meshdns_syncer_watcher_unavailable{watcher=\"serviceexports\"}")
            .await,
        Some(1.0)
    );
    // The CRDs are installed and a ServiceExport made: picked up on the
    // watcher's next retry (kube-runtime backs off from 0.8 s to 30 s).
    fake.set_mcs(true);
    fake.apply(Res::ServiceExports, service_export("shop", "cart"));
    let started = std::time::Instant::now();
    eventually(
        Duration::from_secs(40),
        "cart exported once the CRDs exist",
        || async {
            (answers(&server, "cart.shop.global").await?.1 == vec!["10.1.0.21".to_owned()])
                .then_some(())
        },
    )
    .await;
    println!(
        "MCS picked up {:?} after the CRDs appeared",
        started.elapsed()
    );
    wait_ready_body(&syncer, 200, "ready").await;
    let (_, body) = syncer.readyz().await;
    assert_eq!(body.trim(), "ready");
    assert_eq!(
        syncer
            .metric("meshdns_syncer_watcher_unavailable{watcher=\"serviceexports\"}")
            .await,
        Some(0.0)
    );
    fake.stop();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forbidden_verb_is_named_and_blocks_only_what_needs_it() {
    let (fake, server, dir) = web_fleet("kube-rbac", &[]).await;
    fake.forbid(Res::Services, "list", true);
    fake.forbid(Res::Nodes, "watch", true);
    let syncer = start_syncer(&fake, &server, &dir, &[]).await;
    // Services are needed by everything: nothing is published, and the
    // syncer names the resource and the verb its ServiceAccount lacks.
    let body = wait_ready_body(&syncer, 503, "may not list services").await;
    assert!(body.contains("forbidden (403)"), "{body}");
    assert!(server.clusters().await.is_empty(), "nothing published");
    fake.forbid(Res::Services, "list", false);
    wait_answers(&server, "web.shop.global", &["10.1.0.11"]).await;
    // Nodes listed but cannot be watched: after their first list they are
    // a degradation (the last known nodes kept), named with the verb.
    let body = wait_ready_body(&syncer, 503, "may not watch nodes").await;
    assert!(body.contains("degraded"), "{body}");
    let clusters = server.clusters().await;
    assert_eq!(clusters[0].client_cidrs.len(), 4, "{clusters:?}");
    fake.stop();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_forbidden_from_the_start_export_without_locality() {
    let (fake, server, dir) = web_fleet("kube-no-nodes", &[]).await;
    fake.forbid(Res::Nodes, "list", true);
    let syncer = start_syncer(&fake, &server, &dir, &[]).await;
    wait_answers(&server, "web.shop.global", &["10.1.0.11"]).await;
    let body = wait_ready_body(&syncer, 200, "nodes unavailable").await;
    assert!(body.contains("may not list nodes"), "{body}");
    let clusters = server.clusters().await;
    assert!(clusters[0].client_cidrs.is_empty(), "{clusters:?}");
    fake.stop();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_credentials_are_reported_then_recovered() {
    let (fake, server, dir) = web_fleet("kube-401", &[]).await;
    fake.set_credentials_ok(false);
    let syncer = start_syncer(&fake, &server, &dir, &[]).await;
    wait_ready_body(&syncer, 503, "unauthorized (401)").await;
    assert!(server.clusters().await.is_empty(), "nothing published");
    fake.set_credentials_ok(true);
    wait_answers(&server, "web.shop.global", &["10.1.0.11"]).await;
    fake.stop();
    server.stop().await;
}

/// A selector kube-apiserver answers with 400 stops the syncer at start,
/// naming the flag and the term, before any API server is asked.
#[test]
fn a_bad_selector_fails_at_start_naming_the_term() {
    for (flag, selector, term) in [
        (
            "--selector",
            "app=web,env in (a b)",
            "term 2 (\"env in (a b)\")",
        ),
        ("--selector", "a=b=c", "term 1 (\"a=b=c\")"),
        (
            "--namespace-selector",
            "team in (a",
            "term 1 (\"team in (a\")",
        ),
        ("--namespace-selector", "team=a,", "term 2"),
    ] {
        let out = std::process::Command::new(bin("meshdns-syncer"))
            .args([
                "--insecure",
                "--registry",
                "http://127.0.0.1:9",
                "--cluster",
                "east-1",
                "--kubeconfig",
                "/nonexistent",
                flag,
                selector,
            ])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{flag} {selector:?} accepted");
        assert!(
            text.contains(&format!("{flag}: {selector:?}")) && text.contains(term),
            "{flag} {selector:?}: {text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_in_pages_survive_a_compaction_between_pages() {
    let fake = FakeKube::start_with(Options {
        page_cap: Some(2),
        ..Options::default()
    })
    .await;
    let server = TestServer::start(&[]).await;
    let dir = TempDir::new("kube-pages");
    base_with_web(&fake);
    web_slice(&fake);
    let names: Vec<String> = (1..=6).map(|i| format!("svc{i}")).collect();
    for (i, name) in names.iter().enumerate() {
        fake.apply(
            Res::Services,
            service("shop", name, &[EXPORT], &[], Some(&format!("10.96.1.{i}"))),
        );
        fake.apply(
            Res::EndpointSlices,
            one_ready_slice("shop", name, &format!("10.1.1.{i}")),
        );
    }
    // The first paged list loses its continue token to a compaction.
    fake.compact_before_next_page();
    let _syncer = start_syncer(&fake, &server, &dir, &[]).await;
    for (i, name) in names.iter().enumerate() {
        wait_answers(
            &server,
            &format!("{name}.shop.global"),
            &[&format!("10.1.1.{i}")],
        )
        .await;
    }
    wait_answers(&server, "web.shop.global", &["10.1.0.11"]).await;
    assert_eq!(fake.expired_continues(), 1, "a continue token was refused");
    assert!(fake.continued_pages() >= 6, "lists came in pages");
    fake.stop();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_resumed_after_compaction_relists_in_one_step() {
    let (fake, server, dir) = web_fleet("kube-compact", &[]).await;
    let history = History::follow(server.grpc_url()).await;
    let _syncer = start_syncer(&fake, &server, &dir, &["--coalesce", "0ms"]).await;
    wait_answers(&server, "web.shop.global", &["10.1.0.11"]).await;
    // Changes the syncer's watches do not see (an unlabelled Service)
    // move the resourceVersion on; no bookmark comes for a minute; the
    // history is compacted; the watches drop. Resuming from their last
    // resourceVersion gets 410, and the syncer relists.
    let gone = fake.gone();
    fake.apply(
        Res::Services,
        service("shop", "private", &[], &[], Some("10.96.0.99")),
    );
    fake.compact();
    fake.end_watches();
    fake.apply(
        Res::EndpointSlices,
        slice("shop", "web-a", "web", &ready(&["10.1.0.11", "10.1.0.12"])),
    );
    wait_answers(&server, "web.shop.global", &["10.1.0.11", "10.1.0.12"]).await;
    assert!(fake.gone() > gone, "a resume was refused with 410");
    let versions = history.versions("shop/web");
    assert!(
        versions.iter().all(|v| v
            .as_ref()
            .is_some_and(|v| v.iter().any(|a| a == "10.1.0.11"))),
        "web.shop lost its endpoint during the relist: {versions:?}"
    );
    fake.stop();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_https() {
    let dir = TempDir::new("kube-tls");
    let pki = mint_pki(dir.path());
    let fake = FakeKube::start_with(Options {
        tls: Some(pki),
        ..Options::default()
    })
    .await;
    let server = TestServer::start(&[]).await;
    base_with_web(&fake);
    web_slice(&fake);
    let _syncer = start_syncer(&fake, &server, &dir, &[]).await;
    wait_answers(&server, "web.shop.global", &["10.1.0.11"]).await;
    // The fake offers h2 and http/1.1 (ALPN) as kube-apiserver does; kube's
    // rustls connector asks for http/1.1 only.
    assert_eq!(fake.http_versions(), vec!["HTTP/1.1".to_owned()]);
    fake.stop();
    server.stop().await;
}

/// README: `--namespace` is repeatable; only those namespaces export.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_namespaces_each_export() {
    let (fake, server, dir) = web_fleet("kube-namespaces", &[]).await;
    for (ns, ip) in [("data", "10.1.2.1"), ("other", "10.1.3.1")] {
        fake.apply(
            Res::Services,
            service(ns, "web", &[EXPORT], &[], Some("10.96.2.1")),
        );
        fake.apply(Res::EndpointSlices, one_ready_slice(ns, "web", ip));
    }
    let _syncer = start_syncer(
        &fake,
        &server,
        &dir,
        &["--namespace", "shop", "--namespace", "data"],
    )
    .await;
    wait_answers(&server, "web.shop.global", &["10.1.0.11"]).await;
    wait_answers(&server, "web.data.global", &["10.1.2.1"]).await;
    wait_nxdomain(&server, "web.other.global").await;
    fake.stop();
    server.stop().await;
}
