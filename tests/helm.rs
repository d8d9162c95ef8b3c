//! The Helm chart `charts/shoal` with real Helm: Helm's library from PyPI's `helm-sdkpy` wheel,
//! driven through cffi by `tests/helm/helm_driver.py` (shared/TESTING.md, "Helm without a helm
//! package"). Lints the chart with its default values, `ci/multizone-postgres.yaml` and
//! `ci/crio-restore.yaml`, renders each (a real `helm install` against a fake API server that
//! records the objects) and checks the node DaemonSets against what `shoal node --help` accepts,
//! and their init containers against `shoal containerd-config --help` and
//! `shoal registries-config --help`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

const MANIFEST_DIR: &str = env!("CARGO_MANIFEST_DIR");

/// Panics under `CI=true`, else prints SKIP and returns false.
fn skip(why: &str) -> bool {
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("CI: {why}");
    }
    eprintln!("########## SKIP: {why}; skipping this test ##########");
    false
}

/// The path of `libhelm_sdkpy.so`, downloading and unpacking the wheel into target/ once.
fn helm_library() -> Option<PathBuf> {
    if !common::require_tool("python3") {
        return None;
    }
    let ok = Command::new("python3")
        .args(["-c", "import cffi, yaml"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        skip("python3 lacks the cffi or yaml module (apt-get install python3-cffi python3-yaml)");
        return None;
    }
    let cache = Path::new(MANIFEST_DIR).join("target/helm-sdkpy");
    let lib = cache.join("x/helm_sdkpy/_lib/linux-amd64/libhelm_sdkpy.so");
    if lib.exists() {
        return Some(lib);
    }
    std::fs::create_dir_all(&cache).unwrap();
    let has_wheel = |c: &Path| {
        std::fs::read_dir(c)
            .unwrap()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().ends_with(".whl"))
    };
    if !has_wheel(&cache) {
        let out = Command::new("python3")
            .args(["-m", "pip", "download", "--no-deps", "--only-binary=:all:"])
            .args(["--python-version", "3.12", "helm-sdkpy", "-d"])
            .arg(&cache)
            .output()
            .expect("run pip");
        if !out.status.success() || !has_wheel(&cache) {
            skip(&format!(
                "pip could not download the helm-sdkpy wheel: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
            return None;
        }
    }
    let unzip = "import glob, sys, zipfile; \
                 zipfile.ZipFile(sorted(glob.glob(sys.argv[1] + '/helm_sdkpy-*.whl'))[-1]).extractall(sys.argv[1] + '/x')";
    let st = Command::new("python3")
        .args(["-c", unzip])
        .arg(&cache)
        .status()
        .unwrap();
    assert!(st.success(), "unpacking the helm-sdkpy wheel failed");
    assert!(lib.exists(), "the wheel has no {}", lib.display());
    Some(lib)
}

fn driver(lib: &Path, cmd: &str, chart: &Path, values: Option<&Path>) -> std::process::Output {
    let mut c = Command::new("python3");
    c.arg(Path::new(MANIFEST_DIR).join("tests/helm/helm_driver.py"))
        .arg(lib)
        .arg(cmd)
        .arg(chart);
    if let Some(v) = values {
        c.arg(v);
    }
    c.output().expect("run the helm driver")
}

fn chart() -> PathBuf {
    Path::new(MANIFEST_DIR).join("charts/shoal")
}

fn multizone() -> PathBuf {
    chart().join("ci/multizone-postgres.yaml")
}

fn crio_restore() -> PathBuf {
    chart().join("ci/crio-restore.yaml")
}

fn lint_ok(lib: &Path, chart: &Path, values: Option<&Path>) -> (bool, String) {
    let out = driver(lib, "lint", chart, values);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn render(lib: &Path, values: Option<&Path>) -> Vec<Value> {
    let out = driver(lib, "render", &chart(), values);
    assert!(
        out.status.success(),
        "helm install (render) failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("driver JSON");
    v["objects"].as_array().unwrap().clone()
}

fn of_kind<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| o["kind"] == kind).collect()
}

/// The long flags `--help` of a subcommand lists.
fn help_flags(args: &[&str]) -> Vec<String> {
    let out = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter(|w| w.starts_with("--"))
        .map(|w| {
            w.trim_end_matches(',')
                .split(['=', '[', '<'])
                .next()
                .unwrap()
                .to_string()
        })
        .collect()
}

/// `--flag=value` arguments as (flag, value); a bare `--flag` has an empty value.
fn flag_values(args: &[Value]) -> Vec<(String, String)> {
    args.iter()
        .map(|a| a.as_str().unwrap())
        .filter(|a| a.starts_with("--"))
        .map(|a| match a.split_once('=') {
            Some((f, v)) => (f.to_string(), v.to_string()),
            None => (a.to_string(), String::new()),
        })
        .collect()
}

fn value_of<'a>(flags: &'a [(String, String)], flag: &str) -> Option<&'a str> {
    flags
        .iter()
        .find(|(f, _)| f == flag)
        .map(|(_, v)| v.as_str())
}

fn port_of(addr: &str) -> u64 {
    addr.rsplit([':', '/']).next().unwrap().parse().unwrap()
}

fn mount_path<'a>(container: &'a Value, volume: &str) -> Option<&'a str> {
    container["volumeMounts"]
        .as_array()?
        .iter()
        .find(|m| m["name"] == volume)
        .and_then(|m| m["mountPath"].as_str())
}

/// The volume mounted at the directory holding `file` in `container`, with that volume.
fn volume_for_file<'a>(pod: &'a Value, container: &Value, file: &str) -> &'a Value {
    let dir = Path::new(file).parent().unwrap().to_str().unwrap();
    let m = container["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["mountPath"] == dir)
        .unwrap_or_else(|| panic!("no volume mounted at {dir} for {file}"));
    pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == m["name"])
        .unwrap_or_else(|| panic!("volume {} of {file} is not declared", m["name"]))
}

/// An init container the node DaemonSet should have: the subcommand it runs, the host directory
/// it writes, the registries it names and whether it restores.
struct RuntimeInit {
    command: &'static str,
    host_dir: &'static str,
    registries: &'static [&'static str],
    restore: bool,
}

/// The chart's default: containerd's hosts.toml for `_default` and docker.io, written.
const CONTAINERD_DEFAULT: RuntimeInit = RuntimeInit {
    command: "containerd-config",
    host_dir: "/etc/containerd/certs.d",
    registries: &["docker.io"],
    restore: false,
};

/// The securityContext every container of the chart has, and root (`run_as_root`) or not.
fn check_security_context(what: &str, ctr: &Value, run_as_root: bool) {
    let sc = &ctr["securityContext"];
    if run_as_root {
        assert_eq!(sc["runAsUser"], 0, "{what}: {sc}");
    }
    assert_eq!(sc["readOnlyRootFilesystem"], true, "{what}: {sc}");
    assert_eq!(sc["allowPrivilegeEscalation"], false, "{what}: {sc}");
    assert_eq!(
        sc["capabilities"]["drop"],
        serde_json::json!(["ALL"]),
        "{what}: {sc}"
    );
}

/// Checks one node DaemonSet against `shoal node --help`, and its init containers (`inits`, in
/// order) against the help of the subcommand each runs.
fn check_node_daemonset(ds: &Value, zone: &str, host_network: bool, inits: &[RuntimeInit]) {
    let node_flags = help_flags(&["node", "--help"]);
    let pod = &ds["spec"]["template"]["spec"];
    let name = ds["metadata"]["name"].as_str().unwrap();
    assert_eq!(pod["priorityClassName"], "system-node-critical", "{name}");
    assert_eq!(
        pod["hostNetwork"].as_bool().unwrap_or(false),
        host_network,
        "{name}"
    );
    if host_network {
        assert_eq!(pod["dnsPolicy"], "ClusterFirstWithHostNet", "{name}");
    }
    let c = &pod["containers"][0];
    let args = c["args"].as_array().unwrap();
    assert_eq!(args[0], "node", "{name}: the container runs `shoal node`");
    // The image runs as 65532; the node and its init containers write root-owned host
    // directories (the data dir, certs.d, registries.conf.d), so they run as root, read-only,
    // without capabilities.
    let init_containers = pod["initContainers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    check_security_context(name, c, true);
    for init in &init_containers {
        check_security_context(name, init, true);
    }
    let flags = flag_values(args);
    for (f, _) in &flags {
        assert!(
            node_flags.contains(f),
            "{name}: `shoal node --help` has no {f}"
        );
    }
    for required in [
        "--listen",
        "--admin-listen",
        "--p2p-listen",
        "--data-dir",
        "--swarm-key",
        "--bootstrap",
        "--zone",
    ] {
        assert!(
            value_of(&flags, required).is_some(),
            "{name}: no {required}"
        );
    }
    assert_eq!(value_of(&flags, "--zone"), Some(zone), "{name}");
    assert!(
        value_of(&flags, "--bootstrap").unwrap().starts_with("dns:"),
        "{name}: bootstrap from the headless Service"
    );
    if value_of(&flags, "--manager").is_some() {
        assert!(
            value_of(&flags, "--token-file").is_some(),
            "{name}: --manager needs --token-file"
        );
        assert_eq!(
            value_of(&flags, "--node-name"),
            Some("$(NODE_NAME)"),
            "{name}"
        );
        let env = c["env"].as_array().unwrap();
        let node_name = env
            .iter()
            .find(|e| e["name"] == "NODE_NAME")
            .expect("NODE_NAME env");
        assert_eq!(
            node_name["valueFrom"]["fieldRef"]["fieldPath"], "spec.nodeName",
            "{name}"
        );
        assert!(
            volume_for_file(pod, c, value_of(&flags, "--token-file").unwrap())["secret"]
                .is_object()
        );
    }

    // Ports: each listen flag's port is a declared container port of the right name.
    let ports = c["ports"].as_array().unwrap();
    let port = |n: &str| {
        ports
            .iter()
            .find(|p| p["name"] == n)
            .unwrap_or_else(|| panic!("{name}: no port {n}"))
    };
    assert_eq!(
        port("mirror")["containerPort"].as_u64().unwrap(),
        port_of(value_of(&flags, "--listen").unwrap())
    );
    assert_eq!(
        port("admin")["containerPort"].as_u64().unwrap(),
        port_of(value_of(&flags, "--admin-listen").unwrap())
    );
    assert_eq!(
        port("p2p")["containerPort"].as_u64().unwrap(),
        port_of(value_of(&flags, "--p2p-listen").unwrap())
    );
    assert!(
        value_of(&flags, "--admin-listen")
            .unwrap()
            .starts_with("0.0.0.0:"),
        "{name}: kubelet probes reach the admin port"
    );
    if !host_network {
        for p in ["mirror", "p2p"] {
            assert_eq!(
                port(p)["hostPort"],
                port(p)["containerPort"],
                "{name}: {p} is published on the host"
            );
        }
    }

    // Probes on the admin port.
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz", "{name}");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz", "{name}");
    for probe in ["livenessProbe", "readinessProbe"] {
        let p = &c[probe]["httpGet"]["port"];
        assert!(
            p == "admin" || p == &port("admin")["containerPort"],
            "{name}: {probe} is not on the admin port"
        );
    }

    // Mounts: the data dir is the host's /var/lib/shoal; the swarm key is a mounted Secret.
    let data_dir = value_of(&flags, "--data-dir").unwrap();
    assert_eq!(data_dir, "/var/lib/shoal");
    let data = volume_for_file(pod, c, &format!("{data_dir}/x"));
    assert_eq!(data["hostPath"]["path"], "/var/lib/shoal", "{name}");
    let key = volume_for_file(pod, c, value_of(&flags, "--swarm-key").unwrap());
    assert!(
        key["secret"]["secretName"].is_string(),
        "{name}: the swarm key comes from a Secret"
    );

    // The init containers write the runtimes' configuration into the host's directories,
    // pointing at this DaemonSet's mirror port.
    assert_eq!(
        init_containers.len(),
        inits.len(),
        "{name}: init containers {init_containers:?}"
    );
    for (init, want) in init_containers.iter().zip(inits) {
        let iargs = init["args"].as_array().unwrap();
        assert_eq!(iargs[0], want.command, "{name}");
        let help = help_flags(&[want.command, "--help"]);
        let iflags = flag_values(iargs);
        for (f, _) in &iflags {
            assert!(
                help.contains(f),
                "{name}: `shoal {} --help` has no {f}",
                want.command
            );
        }
        let write = value_of(&iflags, "--write").expect("--write");
        // containerd-config writes a directory, registries-config one file in a directory.
        let written = if want.command == "containerd-config" {
            format!("{write}/x")
        } else {
            assert!(write.ends_with(".conf"), "{name}: {write}");
            write.to_string()
        };
        let volume = volume_for_file(pod, init, &written);
        assert_eq!(volume["hostPath"]["path"], want.host_dir, "{name}");
        assert_eq!(volume["hostPath"]["type"], "DirectoryOrCreate", "{name}");
        let registries: Vec<&str> = iflags
            .iter()
            .filter(|(f, _)| f == "--registry")
            .map(|(_, v)| v.as_str())
            .collect();
        assert_eq!(registries, want.registries, "{name}: {}", want.command);
        assert_eq!(
            value_of(&iflags, "--restore").is_some(),
            want.restore,
            "{name}: {} --restore",
            want.command
        );
        let node_url = value_of(&iflags, "--node").expect("--node");
        assert_eq!(
            port_of(node_url),
            port("mirror")["containerPort"].as_u64().unwrap(),
            "{name}"
        );
        if host_network {
            assert!(
                node_url.starts_with("http://127.0.0.1:"),
                "{name}: {node_url}"
            );
        } else {
            assert_eq!(node_url, format!("http://$(NODE_IP):{}", port_of(node_url)));
            let env = init["env"].as_array().unwrap();
            let ip = env
                .iter()
                .find(|e| e["name"] == "NODE_IP")
                .expect("NODE_IP env");
            assert_eq!(ip["valueFrom"]["fieldRef"]["fieldPath"], "status.hostIP");
        }
    }
    let _ = mount_path(c, "data");
}

#[test]
fn chart_lints_and_renders_with_real_helm() {
    let Some(lib) = helm_library() else { return };

    // Lint: no errors, with the default values and with the multi-zone PostgreSQL file.
    let (ok, text) = lint_ok(&lib, &chart(), None);
    assert!(ok, "lint with default values failed:\n{text}");
    let (ok, text) = lint_ok(&lib, &chart(), Some(&multizone()));
    assert!(ok, "lint with ci/multizone-postgres.yaml failed:\n{text}");
    let (ok, text) = lint_ok(&lib, &chart(), Some(&crio_restore()));
    assert!(ok, "lint with ci/crio-restore.yaml failed:\n{text}");

    // Lint is not a no-op: a broken template and an invalid swarm key are errors.
    let tmp = tempfile::tempdir().unwrap();
    let broken = tmp.path().join("shoal");
    copy_dir(&chart(), &broken);
    std::fs::write(
        broken.join("templates/broken.yaml"),
        "x: {{ .Values.nope.deeper }}\n",
    )
    .unwrap();
    let (ok, text) = lint_ok(&lib, &broken, None);
    assert!(!ok, "lint accepted a broken template:\n{text}");
    let bad_key = tmp.path().join("bad-key.yaml");
    std::fs::write(&bad_key, "swarmKey:\n  value: not-a-key\n").unwrap();
    // (Helm's lint mode only logs `fail`, so the chart's own checks are seen at install.)
    let out = driver(&lib, "render", &chart(), Some(&bad_key));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("swarmKey.value must be"),
        "an invalid swarm key was accepted: {err}"
    );

    // Default values: one zone, host network, SQLite manager with one replica on a PVC.
    let objects = render(&lib, None);
    let daemonsets = of_kind(&objects, "DaemonSet");
    assert_eq!(daemonsets.len(), 1);
    check_node_daemonset(daemonsets[0], "default", true, &[CONTAINERD_DEFAULT]);
    let seeds = of_kind(&objects, "StatefulSet");
    assert_eq!(seeds.len(), 1);
    assert_eq!(seeds[0]["spec"]["replicas"], 2);
    assert!(seeds[0]["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"].is_object());
    let seed_args = seeds[0]["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .unwrap();
    assert!(seed_args.iter().any(|a| a == "--seed"));
    let node_flags = help_flags(&["node", "--help"]);
    for (f, _) in flag_values(seed_args) {
        assert!(
            node_flags.contains(&f),
            "seed: `shoal node --help` has no {f}"
        );
    }
    let manager = of_kind(&objects, "Deployment");
    assert_eq!(manager.len(), 1);
    assert_eq!(manager[0]["spec"]["replicas"], 1);
    // Seeds and the manager keep the image's non-root user; fsGroup opens their volumes to it.
    for pod in [&seeds[0], &manager[0]] {
        let sc = &pod["spec"]["template"]["spec"]["securityContext"];
        assert_eq!(sc["runAsNonRoot"], true, "{sc}");
        assert_eq!(sc["runAsUser"], 65532, "{sc}");
        assert_eq!(sc["fsGroup"], 65532, "{sc}");
        let ctr = &pod["spec"]["template"]["spec"]["containers"][0];
        check_security_context(pod["kind"].as_str().unwrap(), ctr, false);
    }
    let margs: Vec<&str> = manager[0]["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(
        &margs[..3],
        [
            "manager",
            "--listen=0.0.0.0:8080",
            "--data-dir=/var/lib/shoal-manager"
        ]
    );
    let manager_flags = help_flags(&["manager", "--help"]);
    for (f, _) in flag_values(
        &manager[0]["spec"]["template"]["spec"]["containers"][0]["args"]
            .as_array()
            .unwrap()
            .clone(),
    ) {
        assert!(
            manager_flags.contains(&f),
            "manager: `shoal manager --help` has no {f}"
        );
    }
    assert_eq!(of_kind(&objects, "PersistentVolumeClaim").len(), 1);
    let headless = of_kind(&objects, "Service")
        .into_iter()
        .find(|s| s["metadata"]["name"] == "shoal-peers")
        .expect("headless peers Service");
    assert_eq!(headless["spec"]["clusterIP"], "None");
    let bootstrap = value_of(
        &flag_values(
            daemonsets[0]["spec"]["template"]["spec"]["containers"][0]["args"]
                .as_array()
                .unwrap(),
        ),
        "--bootstrap",
    )
    .unwrap()
    .to_string();
    assert!(bootstrap.starts_with("dns:shoal-peers."), "{bootstrap}");
    // The generated swarm key has the `shoal swarm-key` format.
    let secret = of_kind(&objects, "Secret")
        .into_iter()
        .find(|s| s["metadata"]["name"] == "shoal-swarm-key")
        .expect("swarm key Secret");
    let key = b64decode(secret["data"]["swarm.key"].as_str().unwrap());
    let lines: Vec<&str> = key.lines().collect();
    assert_eq!(&lines[..2], ["/key/swarm/psk/1.0.0/", "/base16/"], "{key}");
    assert!(
        lines[2].len() == 64 && lines[2].chars().all(|c| c.is_ascii_hexdigit()),
        "{key}"
    );
    let ann = &daemonsets[0]["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(ann["prometheus.io/scrape"], "true");

    // Two zones, host ports, external PostgreSQL with two manager replicas.
    let objects = render(&lib, Some(&multizone()));
    let daemonsets = of_kind(&objects, "DaemonSet");
    assert_eq!(daemonsets.len(), 2);
    for zone in ["zone-a", "zone-b"] {
        let ds = daemonsets
            .iter()
            .find(|d| d["metadata"]["name"].as_str().unwrap().ends_with(zone))
            .unwrap_or_else(|| panic!("no DaemonSet for {zone}"));
        check_node_daemonset(ds, zone, false, &[CONTAINERD_DEFAULT]);
        assert_eq!(
            ds["spec"]["template"]["spec"]["nodeSelector"]["topology.kubernetes.io/zone"],
            zone
        );
    }
    let seeds = of_kind(&objects, "StatefulSet");
    assert_eq!(seeds.len(), 2);
    for s in &seeds {
        assert_eq!(s["spec"]["replicas"], 2);
        assert!(s["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"].is_array());
    }
    let manager = of_kind(&objects, "Deployment");
    assert_eq!(manager[0]["spec"]["replicas"], 2);
    let env = manager[0]["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .unwrap();
    let db = env
        .iter()
        .find(|e| e["name"] == "SHOAL_DATABASE")
        .expect("SHOAL_DATABASE");
    let secret_name = db["valueFrom"]["secretKeyRef"]["name"].as_str().unwrap();
    let secret = of_kind(&objects, "Secret")
        .into_iter()
        .find(|s| s["metadata"]["name"] == secret_name)
        .expect("database Secret");
    let key = db["valueFrom"]["secretKeyRef"]["key"].as_str().unwrap();
    assert!(b64decode(secret["data"][key].as_str().unwrap()).starts_with("postgres://"));
    assert!(
        of_kind(&objects, "PersistentVolumeClaim").is_empty(),
        "no SQLite volume with PostgreSQL"
    );
    assert!(!of_kind(&objects, "ServiceMonitor").is_empty());
    assert!(!of_kind(&objects, "NetworkPolicy").is_empty());
    let join = of_kind(&objects, "Secret")
        .into_iter()
        .find(|s| s["metadata"]["name"] == "shoal-join-token")
        .expect("join token Secret");
    assert_eq!(
        b64decode(join["data"]["token"].as_str().unwrap()),
        "shj_example-join-token"
    );

    // CRI-O besides containerd, in restore mode (the uninstall step): both init containers
    // restore, each with its host directory mounted.
    let objects = render(&lib, Some(&crio_restore()));
    let daemonsets = of_kind(&objects, "DaemonSet");
    assert_eq!(daemonsets.len(), 1);
    check_node_daemonset(
        daemonsets[0],
        "default",
        false,
        &[
            RuntimeInit {
                command: "containerd-config",
                host_dir: "/etc/containerd/certs.d",
                registries: &["docker.io", "ghcr.io"],
                restore: true,
            },
            RuntimeInit {
                command: "registries-config",
                host_dir: "/etc/containers/registries.conf.d",
                registries: &["docker.io", "quay.io"],
                restore: true,
            },
        ],
    );
    let init = &daemonsets[0]["spec"]["template"]["spec"]["initContainers"][1];
    assert!(
        init["args"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a == "--write=/etc/containers/registries.conf.d/50-shoal.conf"),
        "{init}"
    );

    // The old key is refused by name rather than silently ignored.
    let old_key = tmp.path().join("old-key.yaml");
    std::fs::write(&old_key, "node:\n  containerdConfig:\n    enabled: false\n").unwrap();
    let out = driver(&lib, "render", &chart(), Some(&old_key));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("node.runtimeConfig.containerd"),
        "node.containerdConfig was accepted: {err}"
    );
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            copy_dir(&p, &to.join(e.file_name()));
        } else {
            std::fs::copy(&p, to.join(e.file_name())).unwrap();
        }
    }
}

fn b64decode(s: &str) -> String {
    let out = Command::new("python3")
        .args([
            "-c",
            "import base64, sys; sys.stdout.write(base64.b64decode(sys.argv[1]).decode())",
            s,
        ])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap()
}
