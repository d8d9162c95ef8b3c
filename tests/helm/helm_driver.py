"""Drives Helm's library (libhelm_sdkpy.so from PyPI's helm-sdkpy wheel) through cffi.

    python3 helm_driver.py LIB lint CHART [VALUES_FILE]
        Lints CHART with its values.yaml, or with VALUES_FILE merged over them (the library's
        lint takes no values, so the chart is copied and its values.yaml replaced). Prints the
        lint result as JSON; exits 1 if it reports an error (severity >= 3).
    python3 helm_driver.py LIB render CHART [VALUES_FILE]
        Installs CHART (no --wait) against a fake Kubernetes API server in this process, which
        answers discovery and records every object Helm creates. Prints
        {"objects": [...], "result": ...} as JSON. The library has no dry-run or template call,
        so this is how real Helm's rendering is observed.
"""

import copy
import json
import os
import shutil
import sys
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import yaml
from cffi import FFI

CDEF = """
typedef unsigned long long helm_sdkpy_handle;
int helm_sdkpy_config_create(const char *namespace, const char *kubeconfig, const char *kubecontext, const char *options_json, helm_sdkpy_handle *handle_out);
void helm_sdkpy_config_destroy(helm_sdkpy_handle handle);
int helm_sdkpy_install(helm_sdkpy_handle handle, const char *release_name, const char *chart_path, const char *values_json, const char *version, const char *options_json, char **result_json);
int helm_sdkpy_lint(helm_sdkpy_handle handle, const char *chart_path, char **result_json);
const char *helm_sdkpy_last_error(void);
void helm_sdkpy_free(void *ptr);
const char *helm_sdkpy_version_string(void);
"""

ffi = FFI()
ffi.cdef(CDEF)


def cstr(s):
    return ffi.new("char[]", s.encode()) if s is not None else ffi.NULL


def check(lib, rc, what):
    if rc != 0:
        p = lib.helm_sdkpy_last_error()
        msg = ffi.string(p).decode() if p != ffi.NULL else "unknown error"
        raise SystemExit(f"{what} failed ({rc}): {msg}")


def take(lib, out):
    if out[0] == ffi.NULL:
        return ""
    s = ffi.string(out[0]).decode()
    lib.helm_sdkpy_free(out[0])
    return s


def merge(base, over):
    if isinstance(base, dict) and isinstance(over, dict):
        r = dict(base)
        for k, v in over.items():
            r[k] = merge(base.get(k), v) if k in base else copy.deepcopy(v)
        return r
    return copy.deepcopy(over)


def chart_with_values(chart, values_file, tmp):
    if not values_file:
        return chart
    dst = os.path.join(tmp, os.path.basename(os.path.abspath(chart)))
    shutil.copytree(chart, dst)
    with open(os.path.join(chart, "values.yaml")) as f:
        base = yaml.safe_load(f) or {}
    with open(values_file) as f:
        over = yaml.safe_load(f) or {}
    with open(os.path.join(dst, "values.yaml"), "w") as f:
        yaml.safe_dump(merge(base, over), f)
    return dst


def handle(lib, kubeconfig, namespace="default"):
    h = ffi.new("helm_sdkpy_handle *")
    check(lib, lib.helm_sdkpy_config_create(cstr(namespace), cstr(kubeconfig), ffi.NULL, cstr("{}"), h), "config_create")
    return h[0]


def lint(lib, chart, tmp):
    h = handle(lib, os.path.join(tmp, "no-kubeconfig"))
    out = ffi.new("char **")
    check(lib, lib.helm_sdkpy_lint(h, cstr(chart), out), "lint")
    result = json.loads(take(lib, out) or "{}")
    print(json.dumps(result, indent=1))
    msgs = result.get("Messages") or result.get("messages") or []
    errors = [m for m in msgs if (m.get("Severity") or m.get("severity") or 0) >= 3]
    if errors or result.get("Errors") or result.get("errors"):
        sys.exit(1)


# --- a fake Kubernetes API server: discovery, empty lists, 404 on get, echo on create ---------

RESOURCES = {
    "v1": [("secrets", "Secret"), ("services", "Service"), ("configmaps", "ConfigMap"),
           ("serviceaccounts", "ServiceAccount"), ("persistentvolumeclaims", "PersistentVolumeClaim"),
           ("pods", "Pod")],
    "apps/v1": [("daemonsets", "DaemonSet"), ("statefulsets", "StatefulSet"), ("deployments", "Deployment")],
    "networking.k8s.io/v1": [("networkpolicies", "NetworkPolicy")],
    "rbac.authorization.k8s.io/v1": [("clusterroles", "ClusterRole"), ("clusterrolebindings", "ClusterRoleBinding"),
                                     ("roles", "Role"), ("rolebindings", "RoleBinding")],
    "monitoring.coreos.com/v1": [("servicemonitors", "ServiceMonitor")],
    "policy/v1": [("poddisruptionbudgets", "PodDisruptionBudget")],
}
CLUSTER_SCOPED = {"clusterroles", "clusterrolebindings", "namespaces"}
CREATED = []
LOCK = threading.Lock()


class Api(BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass

    def send(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def status(self, code, reason):
        self.send(code, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason, "code": code})

    def parts(self):
        path = self.path.split("?")[0].strip("/").split("/")
        if path[0] == "api":
            return "v1", path[2:]
        if path[0] == "apis" and len(path) >= 3:
            return path[1] + "/" + path[2], path[3:]
        return None, path

    def do_GET(self):
        p = self.path.split("?")[0].rstrip("/")
        if p == "/version":
            return self.send(200, {"major": "1", "minor": "31", "gitVersion": "v1.31.0", "platform": "linux/amd64"})
        if p == "/api":
            return self.send(200, {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []})
        if p == "/apis":
            groups = []
            for gv in RESOURCES:
                if gv == "v1":
                    continue
                g, v = gv.split("/")
                ver = {"groupVersion": gv, "version": v}
                groups.append({"name": g, "versions": [ver], "preferredVersion": ver})
            return self.send(200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
        gv, rest = self.parts()
        if gv in RESOURCES and not rest:
            res = [{"name": n, "singularName": "", "namespaced": n not in CLUSTER_SCOPED, "kind": k,
                    "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"]} for n, k in RESOURCES[gv]]
            return self.send(200, {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": res})
        if gv is not None:
            if rest[:1] == ["namespaces"] and len(rest) == 2:
                return self.send(200, {"kind": "Namespace", "apiVersion": "v1", "metadata": {"name": rest[1]}})
            if rest[:1] == ["namespaces"]:
                rest = rest[2:]
            if len(rest) == 1:
                return self.send(200, {"kind": "List", "apiVersion": gv, "metadata": {"resourceVersion": "1"}, "items": []})
            return self.status(404, "NotFound")
        return self.status(404, "NotFound")

    def do_POST(self):
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n)
        ctype = self.headers.get("Content-Type") or ""
        if "protobuf" in ctype:
            # Helm's own release record (a typed Secret): echo it back as it came.
            self.send_response(201)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)
            return
        body = json.loads(raw or b"{}")
        with LOCK:
            CREATED.append(body)
        body.setdefault("metadata", {})["resourceVersion"] = "1"
        body["metadata"]["uid"] = "00000000-0000-0000-0000-%012d" % len(CREATED)
        self.send(201, body)

    def do_PUT(self):
        self.do_POST()

    def do_PATCH(self):
        self.do_POST()

    def do_DELETE(self):
        self.send(200, {"kind": "Status", "apiVersion": "v1", "status": "Success"})


def render(lib, chart, tmp):
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Api)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    kubeconfig = os.path.join(tmp, "kubeconfig")
    with open(kubeconfig, "w") as f:
        yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "fake",
            "clusters": [{"name": "fake", "cluster": {"server": "http://127.0.0.1:%d" % srv.server_address[1]}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "namespace": "shoal", "user": "fake"}}],
            "users": [{"name": "fake", "user": {"token": "fake"}}],
        }, f)
    h = handle(lib, kubeconfig, "shoal")
    out = ffi.new("char **")
    opts = {"wait": False, "timeout_seconds": 60, "disable_openapi_validation": True, "create_namespace": False}
    check(lib, lib.helm_sdkpy_install(h, cstr("shoal"), cstr(chart), cstr("{}"), ffi.NULL, cstr(json.dumps(opts)), out), "install")
    result = take(lib, out)
    srv.shutdown()
    try:
        result = json.loads(result)
    except ValueError:
        pass
    # Helm's own release records (secrets of type helm.sh/release.v1) are not chart objects.
    objects = [o for o in CREATED if o.get("type") != "helm.sh/release.v1"]
    print(json.dumps({"objects": objects, "result": result}))


def main():
    lib_path, cmd, chart = sys.argv[1], sys.argv[2], sys.argv[3]
    values_file = sys.argv[4] if len(sys.argv) > 4 else None
    lib = ffi.dlopen(lib_path)
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("HELM_CACHE_HOME", os.path.join(tmp, "cache"))
        os.environ.setdefault("HELM_CONFIG_HOME", os.path.join(tmp, "config"))
        os.environ.setdefault("HELM_DATA_HOME", os.path.join(tmp, "data"))
        # Release records in memory: Helm writes them as protobuf Secrets, which the fake API
        # server does not speak.
        os.environ["HELM_DRIVER"] = "memory"
        chart = chart_with_values(chart, values_file, tmp)
        if cmd == "lint":
            lint(lib, chart, tmp)
        elif cmd == "render":
            render(lib, chart, tmp)
        else:
            raise SystemExit("unknown command " + cmd)


if __name__ == "__main__":
    main()
