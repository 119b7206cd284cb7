// Package deploy holds the deployment artifacts of shadowproxy (container
// image, Kubernetes manifests, systemd unit, Grafana dashboard, Prometheus
// alerts) and the tests that keep them true to the binary: every file
// parses, every embedded configuration loads without warnings, the
// manifests probe, secure and scrape what the proxy serves, and every
// shadowproxy_* metric the dashboard and the alerts query is one a running
// proxy exports.
package deploy

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/shadowproxy/shadowproxy/config"
	"github.com/shadowproxy/shadowproxy/internal/app"
	"github.com/shadowproxy/shadowproxy/internal/demo"
	"github.com/shadowproxy/shadowproxy/internal/testkit"
	"github.com/shadowproxy/shadowproxy/internal/testkit/apptest"
	"github.com/shadowproxy/shadowproxy/internal/testkit/manifest"
)

// testEnv stands in for the environment the manifests give the proxy.
var testEnv = map[string]string{"ADMIN_TOKEN": "0123456789abcdef0123456789abcdef",
	"POD_NAME": "shadowproxy-edge-7d9f8c6b5-x2x4q", "POD_IP": "10.1.2.3"}

func lookupEnv(k string) (string, bool) {
	v, ok := testEnv[k]
	return v, ok
}

// ---- parsing --------------------------------------------------------------

// yamlDocs decodes every document of a multi-document YAML file.
func yamlDocs(t *testing.T, path string) []map[string]any {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var docs []map[string]any
	for {
		var d map[string]any
		err := dec.Decode(&d)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("%s: document %d: %v", path, len(docs)+1, err)
		}
		if d != nil {
			docs = append(docs, d)
		}
	}
	return docs
}

func TestEveryYAMLAndJSONFileParses(t *testing.T) {
	var n int
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			// Helm templates are Go templates, not YAML; deploy/helm's
			// own tests render and parse them.
			if path == filepath.Join("helm", "shadowproxy", "templates") {
				return filepath.SkipDir
			}
			return nil
		}
		switch filepath.Ext(path) {
		case ".yaml", ".yml":
			n++
			docs := yamlDocs(t, path)
			if len(docs) == 0 {
				t.Errorf("%s: no YAML document", path)
			}
			if strings.HasPrefix(path, "kubernetes"+string(filepath.Separator)) && filepath.Base(path) != "kustomization.yaml" {
				for i, d := range docs {
					meta, _ := d["metadata"].(map[string]any)
					if d["apiVersion"] == nil || d["kind"] == nil || meta == nil || meta["name"] == nil {
						t.Errorf("%s: document %d lacks apiVersion, kind or metadata.name", path, i+1)
					}
				}
			}
		case ".json":
			n++
			data, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			var v any
			if err := json.Unmarshal(data, &v); err != nil {
				t.Errorf("%s: %v", path, err)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n < 6 {
		t.Errorf("found %d YAML/JSON files, want at least 6 (kubernetes, prometheus, grafana, systemd)", n)
	}
}

// ---- Kubernetes -------------------------------------------------------------

// get, str, byKind, labelsMatch and portOf are short names for the
// manifest helpers, which deploy's and deploy/helm's tests share.
func get(v any, path ...any) any { return manifest.Get(v, path...) }

func str(v any) string { return manifest.Str(v) }

func byKind(docs []map[string]any, kind string) []map[string]any { return manifest.ByKind(docs, kind) }

func labelsMatch(selector, labels any) bool { return manifest.LabelsMatch(selector, labels) }

// loadConfigMap extracts and loads the shadowproxy config of a ConfigMap
// with the given variables, checking that the container provides each of
// them.
func loadConfigMap(t *testing.T, file string, cm map[string]any, key string) *config.Config {
	t.Helper()
	text := str(get(cm, "data", key))
	if text == "" {
		t.Fatalf("%s: ConfigMap %s has no %s", file, get(cm, "metadata", "name"), key)
	}
	cfg, err := config.Load(file+":"+key, []byte(text), lookupEnv)
	if err != nil {
		t.Fatalf("%s: the embedded configuration does not load:\n%v", file, err)
	}
	if w := cfg.Warnings(); len(w) > 0 {
		t.Errorf("%s: the embedded configuration has warnings: %v", file, w)
	}
	return cfg
}

func portOf(t *testing.T, addr string) int { t.Helper(); return manifest.PortOf(t, addr) }

var envRef = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)(:-[^}]*)?\}`)

// checkWorkload checks the pod template of a Deployment that runs
// shadowproxy against the ConfigMap it mounts.
func checkWorkload(t *testing.T, file string, docs []map[string]any, dep map[string]any) (cfg *config.Config, proxy map[string]any) {
	t.Helper()
	name := str(get(dep, "metadata", "name"))
	pod := get(dep, "spec", "template")
	spec := get(pod, "spec")
	if !labelsMatch(get(dep, "spec", "selector", "matchLabels"), get(pod, "metadata", "labels")) {
		t.Errorf("%s: Deployment %s: selector does not match the pod labels", file, name)
	}
	if get(spec, "securityContext", "runAsNonRoot") != true {
		t.Errorf("%s: Deployment %s: pod securityContext.runAsNonRoot is not true", file, name)
	}
	containers, _ := get(spec, "containers").([]any)
	inits, _ := get(spec, "initContainers").([]any)
	native := false
	for i, c := range append(slices.Clone(containers), inits...) {
		cn := str(get(c, "name"))
		for _, r := range []string{"requests", "limits"} {
			if get(c, "resources", r, "memory") == nil {
				t.Errorf("%s: container %s: no resources.%s.memory", file, cn, r)
			}
		}
		if get(c, "resources", "requests", "cpu") == nil {
			t.Errorf("%s: container %s: no resources.requests.cpu", file, cn)
		}
		sc := get(c, "securityContext")
		if get(sc, "readOnlyRootFilesystem") != true || get(sc, "allowPrivilegeEscalation") != false ||
			!reflect.DeepEqual(get(sc, "capabilities", "drop"), []any{"ALL"}) {
			t.Errorf("%s: container %s: securityContext must set readOnlyRootFilesystem, no privilege escalation and drop ALL: %v", file, cn, sc)
		}
		if cn == "shadowproxy" {
			proxy, _ = c.(map[string]any)
			native = i >= len(containers)
		}
	}
	if proxy == nil {
		t.Fatalf("%s: Deployment %s has no container named shadowproxy", file, name)
	}
	if get(proxy, "securityContext", "runAsNonRoot") != true {
		t.Errorf("%s: the shadowproxy container does not set runAsNonRoot", file)
	}

	// The config file the container is told to read comes from a ConfigMap.
	args, _ := get(proxy, "args").([]any)
	i := slices.Index(args, any("-config"))
	if i < 0 || i+1 >= len(args) {
		t.Fatalf("%s: shadowproxy args %v lack -config FILE", file, args)
	}
	cfgPath := str(args[i+1])
	var cm map[string]any
	for _, m := range get(proxy, "volumeMounts").([]any) {
		mp := str(get(m, "mountPath"))
		if !strings.HasPrefix(cfgPath, mp+"/") {
			continue
		}
		for _, v := range get(spec, "volumes").([]any) {
			if get(v, "name") == get(m, "name") && get(v, "configMap") != nil {
				for _, d := range byKind(docs, "ConfigMap") {
					if get(d, "metadata", "name") == get(v, "configMap", "name") {
						cm = d
					}
				}
			}
		}
	}
	if cm == nil {
		t.Fatalf("%s: %s is not in a ConfigMap mounted into the shadowproxy container", file, cfgPath)
	}
	key := strings.TrimPrefix(cfgPath, filepath.Dir(cfgPath)+"/")
	// Every ${VAR} the configuration uses without a default is set on the
	// container.
	envs := map[string]bool{}
	for _, e := range get(proxy, "env").([]any) {
		envs[str(get(e, "name"))] = true
	}
	for _, m := range envRef.FindAllStringSubmatch(str(get(cm, "data", key)), -1) {
		if m[2] == "" && !envs[m[1]] {
			t.Errorf("%s: the configuration uses ${%s} but the shadowproxy container does not set it", file, m[1])
		}
	}
	cfg = loadConfigMap(t, file, cm, key)

	// Ports, probes and scraping line up with the configuration.
	ports := map[string]int{}
	for _, p := range get(proxy, "ports").([]any) {
		n, _ := get(p, "containerPort").(int)
		ports[str(get(p, "name"))] = n
	}
	if ports["http"] != portOf(t, cfg.Listen) || ports["admin"] != portOf(t, cfg.AdminListen) {
		t.Errorf("%s: container ports %v do not match listen %s and admin_listen %s", file, ports, cfg.Listen, cfg.AdminListen)
	}
	if h, _, _ := net.SplitHostPort(cfg.Listen); h != "0.0.0.0" && h != "" {
		t.Errorf("%s: listen %s is not reachable from outside the container", file, cfg.Listen)
	}
	for probe, path := range map[string]string{"readinessProbe": "/readyz", "livenessProbe": "/healthz"} {
		if str(get(proxy, probe, "httpGet", "path")) != path || str(get(proxy, probe, "httpGet", "port")) != "admin" {
			t.Errorf("%s: %s = %v, want GET %s on the admin port", file, probe, get(proxy, probe), path)
		}
	}
	ann := get(pod, "metadata", "annotations")
	if str(get(ann, "prometheus.io/scrape")) != "true" || str(get(ann, "prometheus.io/port")) != strconv.Itoa(ports["admin"]) ||
		str(get(ann, "prometheus.io/path")) != "/metrics" {
		t.Errorf("%s: pod annotations %v do not point Prometheus at the admin port's /metrics", file, ann)
	}
	// SIGTERM drains for shutdown_timeout after the preStop sleep; the pod
	// must be given longer before SIGKILL.
	grace, _ := get(spec, "terminationGracePeriodSeconds").(int)
	sleep, _ := get(proxy, "lifecycle", "preStop", "sleep", "seconds").(int)
	if native {
		// A native sidecar is stopped after the application has exited,
		// so the application's preStop sleep comes first.
		sleep, _ = get(containers, 0, "lifecycle", "preStop", "sleep", "seconds").(int)
	}
	if need := sleep + int(cfg.Limits.ShutdownTimeout.D().Seconds()); grace <= need {
		t.Errorf("%s: terminationGracePeriodSeconds %d must exceed preStop sleep + shutdown_timeout = %ds", file, grace, need)
	}
	// The state directory must be writable on a read-only root filesystem.
	writable := false
	for _, m := range get(proxy, "volumeMounts").([]any) {
		if get(m, "mountPath") == "/var/lib/shadowproxy" && get(m, "readOnly") != true {
			writable = true
		}
	}
	if !writable {
		t.Errorf("%s: /var/lib/shadowproxy (rollout state) is not a writable volume", file)
	}
	checkGoMemLimit(t, file, proxy)
	if len(cfg.TrustedProxies) > 0 {
		t.Errorf("%s: trusted_proxies %v: every pod in those ranges could spoof client addresses; keep it empty unless an HTTP load balancer with its own addresses fronts the proxy", file, cfg.TrustedProxies)
	}
	return cfg, proxy
}

func serviceTargets(t *testing.T, file string, svc, pod map[string]any, proxy map[string]any) []string {
	t.Helper()
	if !labelsMatch(get(svc, "spec", "selector"), get(pod, "metadata", "labels")) {
		t.Errorf("%s: Service %s does not select the pods", file, get(svc, "metadata", "name"))
	}
	var names []string
	for _, p := range get(svc, "spec", "ports").([]any) {
		tp := str(get(p, "targetPort"))
		found := false
		for _, cp := range get(proxy, "ports").([]any) {
			if str(get(cp, "name")) == tp || str(get(cp, "containerPort")) == tp {
				found = true
			}
		}
		if !found {
			t.Errorf("%s: Service %s targets port %s, which the shadowproxy container does not have", file, get(svc, "metadata", "name"), tp)
		}
		names = append(names, tp)
	}
	return names
}

// checkGoMemLimit: GOMEMLIMIT is about 90% of the memory limit, leaving
// room for what the Go runtime does not account for.
func checkGoMemLimit(t *testing.T, file string, proxy map[string]any) {
	t.Helper()
	var val string
	for _, e := range get(proxy, "env").([]any) {
		if get(e, "name") == "GOMEMLIMIT" {
			val = str(get(e, "value"))
		}
	}
	gml, err := strconv.ParseInt(val, 10, 64)
	if err != nil {
		t.Errorf("%s: GOMEMLIMIT %q is not a byte count", file, val)
		return
	}
	lim := str(get(proxy, "resources", "limits", "memory"))
	units := map[string]int64{"Mi": 1 << 20, "Gi": 1 << 30}
	n, _ := strconv.ParseInt(lim[:len(lim)-2], 10, 64)
	if units[lim[len(lim)-2:]] == 0 || n == 0 {
		t.Fatalf("%s: limits.memory %q: write it in Mi or Gi", file, lim)
	}
	if r := float64(gml) / float64(n*units[lim[len(lim)-2:]]); r < 0.85 || r > 0.95 {
		t.Errorf("%s: GOMEMLIMIT %d is %.2f of the memory limit %s, want about 0.9", file, gml, r, lim)
	}
}

func TestKubernetesSidecar(t *testing.T) {
	file := "kubernetes/base/sidecar/sidecar.yaml"
	docs := yamlDocs(t, file)
	deps := byKind(docs, "Deployment")
	if len(deps) != 1 || len(byKind(docs, "Service")) != 1 || len(byKind(docs, "ConfigMap")) != 1 || len(byKind(docs, "NetworkPolicy")) != 1 {
		t.Fatalf("%s: want one Deployment, Service, ConfigMap and NetworkPolicy", file)
	}
	cfg, proxy := checkWorkload(t, file, docs, deps[0])
	containers := get(deps[0], "spec", "template", "spec", "containers").([]any)
	if len(containers) != 1 || get(containers, 0, "name") == "shadowproxy" {
		t.Fatalf("%s: the pod must run the application as its main container", file)
	}
	// A native sidecar: starts before the application, stops after it.
	if get(proxy, "restartPolicy") != "Always" || !slices.ContainsFunc(get(deps[0], "spec", "template", "spec", "initContainers").([]any), func(c any) bool { return get(c, "name") == "shadowproxy" }) {
		t.Errorf("%s: the proxy is not a native sidecar (an init container with restartPolicy: Always)", file)
	}
	if str(get(proxy, "startupProbe", "httpGet", "port")) != "admin" {
		t.Errorf("%s: the proxy has no startup probe on the admin port; the application would start before it answers", file)
	}
	// The application has its own readiness probe, on its own port.
	app := containers[0]
	if p := str(get(app, "readinessProbe", "httpGet", "port")); p == "" || (p != str(get(app, "ports", 0, "name")) && p != str(get(app, "ports", 0, "containerPort"))) {
		t.Errorf("%s: the application's readiness probe %v does not probe the application's port", file, get(app, "readinessProbe"))
	}
	// Other pods reach the proxy's ports only.
	np := byKind(docs, "NetworkPolicy")[0]
	if !labelsMatch(get(np, "spec", "podSelector", "matchLabels"), get(deps[0], "spec", "template", "metadata", "labels")) {
		t.Errorf("%s: the NetworkPolicy does not select the pods", file)
	}
	var admitted []string
	for _, r := range get(np, "spec", "ingress").([]any) {
		ports, _ := get(r, "ports").([]any)
		if len(ports) == 0 {
			t.Errorf("%s: a NetworkPolicy rule admits every port", file)
		}
		for _, p := range ports {
			admitted = append(admitted, str(get(p, "port")))
		}
	}
	if sort.Strings(admitted); !reflect.DeepEqual(admitted, []string{"admin", "http"}) {
		t.Errorf("%s: the NetworkPolicy admits ports %v, want only the proxy's http and admin", file, admitted)
	}
	// The application is reached on localhost, and only through the proxy.
	local := false
	for _, u := range cfg.Upstreams {
		local = local || strings.HasPrefix(u.URL, "http://127.0.0.1:")
	}
	if !local {
		t.Errorf("%s: no upstream on 127.0.0.1: the proxy does not front the application in its pod", file)
	}
	if got := serviceTargets(t, file, byKind(docs, "Service")[0], get(deps[0], "spec", "template").(map[string]any), proxy); !reflect.DeepEqual(got, []string{"http"}) {
		t.Errorf("%s: the Service targets %v, want only the proxy's http port", file, got)
	}
}

func TestKubernetesEdge(t *testing.T) {
	file := "kubernetes/base/edge/edge.yaml"
	docs := yamlDocs(t, file)
	deps := byKind(docs, "Deployment")
	if len(deps) != 1 || len(byKind(docs, "ConfigMap")) != 1 || len(byKind(docs, "PodDisruptionBudget")) != 1 {
		t.Fatalf("%s: want one Deployment, ConfigMap and PodDisruptionBudget", file)
	}
	cfg, proxy := checkWorkload(t, file, docs, deps[0])
	// The secondary teaches noise only when it is another instance than
	// the one that answered the primary: never the primary's own Service.
	host := func(name string) string {
		u := cfg.Upstream(name)
		if u == nil {
			t.Fatalf("%s: no upstream %q", file, name)
		}
		return strings.TrimPrefix(u.URL, "http://")
	}
	secondaries := 0
	for _, r := range cfg.Routes {
		if r.Shadow != nil && r.Shadow.Compare != nil && r.Shadow.Compare.Secondary != "" {
			secondaries++
			if host(r.Shadow.Compare.Secondary) == host(r.Upstream) {
				t.Errorf("%s: route %s: secondary %s is the primary's Service", file, r.Name, r.Shadow.Compare.Secondary)
			}
		}
	}
	if secondaries == 0 {
		t.Errorf("%s: no route learns noise from a secondary", file)
	}
	pod := get(deps[0], "spec", "template").(map[string]any)
	checkEdgeFleet(t, file, cfg, proxy)
	if r, _ := get(deps[0], "spec", "replicas").(int); r < 2 {
		t.Errorf("%s: %d replicas; an edge needs at least 2 to survive a disruption", file, r)
	}
	pdb := byKind(docs, "PodDisruptionBudget")[0]
	if !labelsMatch(get(pdb, "spec", "selector", "matchLabels"), get(pod, "metadata", "labels")) {
		t.Errorf("%s: the PodDisruptionBudget does not select the proxies", file)
	}
	var public, admin bool
	for _, svc := range byKind(docs, "Service") {
		targets := serviceTargets(t, file, svc, pod, proxy)
		public = public || slices.Contains(targets, "http")
		admin = admin || slices.Contains(targets, "admin")
		if slices.Contains(targets, "http") && slices.Contains(targets, "admin") {
			t.Errorf("%s: Service %s exposes the admin port beside the public one", file, get(svc, "metadata", "name"))
		}
	}
	if !public || !admin {
		t.Errorf("%s: want a Service for the proxy port and one for the admin port (public %v, admin %v)", file, public, admin)
	}
}

func TestKubernetesMonitoring(t *testing.T) {
	mon := yamlDocs(t, "kubernetes/base/monitoring/monitoring.yaml")
	edge := yamlDocs(t, "kubernetes/base/edge/edge.yaml")
	sidecar := yamlDocs(t, "kubernetes/base/sidecar/sidecar.yaml")

	sms := byKind(mon, "ServiceMonitor")
	if len(sms) != 1 {
		t.Fatal("monitoring.yaml: want one ServiceMonitor")
	}
	selected := false
	for _, svc := range byKind(edge, "Service") {
		if labelsMatch(get(sms[0], "spec", "selector", "matchLabels"), get(svc, "metadata", "labels")) {
			selected = true
			port := str(get(sms[0], "spec", "endpoints", 0, "port"))
			ok := false
			for _, p := range get(svc, "spec", "ports").([]any) {
				ok = ok || (str(get(p, "name")) == port && str(get(p, "targetPort")) == "admin")
			}
			if !ok || str(get(sms[0], "spec", "endpoints", 0, "path")) != "/metrics" {
				t.Errorf("ServiceMonitor endpoint %v is not the admin port's /metrics of Service %s", get(sms[0], "spec", "endpoints", 0), get(svc, "metadata", "name"))
			}
		}
	}
	if !selected {
		t.Error("the ServiceMonitor selects no Service of edge.yaml")
	}

	pms := byKind(mon, "PodMonitor")
	if len(pms) != 1 {
		t.Fatal("monitoring.yaml: want one PodMonitor")
	}
	pod := get(byKind(sidecar, "Deployment")[0], "spec", "template")
	if !labelsMatch(get(pms[0], "spec", "selector", "matchLabels"), get(pod, "metadata", "labels")) {
		t.Error("the PodMonitor does not select the sidecar pods")
	}
	if str(get(pms[0], "spec", "podMetricsEndpoints", 0, "port")) != "admin" {
		t.Error("the PodMonitor does not scrape the admin port")
	}

	rules := byKind(mon, "PrometheusRule")
	if len(rules) != 1 {
		t.Fatal("monitoring.yaml: want one PrometheusRule")
	}
	alerts := yamlDocs(t, "prometheus/alerts.yaml")[0]
	if !reflect.DeepEqual(get(rules[0], "spec"), alerts) {
		t.Error("the PrometheusRule in monitoring.yaml differs from prometheus/alerts.yaml; keep them identical")
	}
}

// ---- Kustomize -----------------------------------------------------------------

// kustomization reads dir/kustomization.yaml and the objects of its
// resources, following directories (bases) recursively.
func kustomization(t *testing.T, dir string) (k map[string]any, objs []map[string]any) {
	t.Helper()
	file := filepath.Join(dir, "kustomization.yaml")
	docs := yamlDocs(t, file)
	if len(docs) != 1 || docs[0]["kind"] != "Kustomization" || !strings.HasPrefix(str(docs[0]["apiVersion"]), "kustomize.config.k8s.io/") {
		t.Fatalf("%s: not a Kustomization", file)
	}
	k = docs[0]
	res, _ := k["resources"].([]any)
	if len(res) == 0 {
		t.Fatalf("%s: no resources", file)
	}
	for _, r := range res {
		path := filepath.Join(dir, str(r))
		st, err := os.Stat(path)
		if err != nil {
			t.Fatalf("%s: resource %v: %v", file, r, err)
		}
		if st.IsDir() {
			_, sub := kustomization(t, path)
			objs = append(objs, sub...)
		} else {
			objs = append(objs, yamlDocs(t, path)...)
		}
	}
	return k, objs
}

func TestKustomize(t *testing.T) {
	bases, _ := filepath.Glob("kubernetes/base/*/kustomization.yaml")
	overlays, _ := filepath.Glob("kubernetes/overlays/*/kustomization.yaml")
	if len(bases) < 3 || len(overlays) < 2 {
		t.Fatalf("bases %v, overlays %v: want the edge, sidecar and monitoring bases and at least two overlays", bases, overlays)
	}
	// Bases are namespace-free: the overlay (or kubectl -n) decides.
	for _, b := range bases {
		k, objs := kustomization(t, filepath.Dir(b))
		if k["namespace"] != nil {
			t.Errorf("%s: a base sets namespace %v", b, k["namespace"])
		}
		for _, o := range objs {
			if ns := get(o, "metadata", "namespace"); ns != nil {
				t.Errorf("%s: %s %s hard-codes namespace %v", b, o["kind"], get(o, "metadata", "name"), ns)
			}
		}
	}
	for _, o := range overlays {
		k, objs := kustomization(t, filepath.Dir(o))
		if str(k["namespace"]) == "" {
			t.Errorf("%s: an overlay must choose the namespace", o)
		}
		images := map[string]bool{}
		names := map[string]map[string]bool{}
		for _, obj := range objs {
			kind, name := str(obj["kind"]), str(get(obj, "metadata", "name"))
			if names[kind] == nil {
				names[kind] = map[string]bool{}
			}
			names[kind][name] = true
			for _, list := range []string{"containers", "initContainers"} {
				cs, _ := get(obj, "spec", "template", "spec", list).([]any)
				for _, c := range cs {
					img, _, _ := strings.Cut(str(get(c, "image")), ":")
					images[img] = true
				}
			}
		}
		// Every image, replica count and patch of the overlay applies to
		// something its bases define; a typo would silently do nothing.
		imgs, _ := k["images"].([]any)
		for _, i := range imgs {
			if !images[str(get(i, "name"))] {
				t.Errorf("%s: image %v is used by no container", o, get(i, "name"))
			}
		}
		reps, _ := k["replicas"].([]any)
		for _, r := range reps {
			if !names["Deployment"][str(get(r, "name"))] {
				t.Errorf("%s: replicas for %v, which is no Deployment", o, get(r, "name"))
			}
		}
		patches, _ := k["patches"].([]any)
		for _, p := range patches {
			kind, name := str(get(p, "target", "kind")), str(get(p, "target", "name"))
			if !names[kind][name] {
				t.Errorf("%s: patch targets %s %s, which does not exist", o, kind, name)
			}
			var ops []map[string]any
			if err := yaml.Unmarshal([]byte(str(get(p, "patch"))), &ops); err != nil || len(ops) == 0 {
				t.Errorf("%s: patch for %s %s is not a JSON 6902 list: %v", o, kind, name, err)
			}
		}
	}
}

// ---- alerts ------------------------------------------------------------------

func TestAlertRules(t *testing.T) {
	doc := yamlDocs(t, "prometheus/alerts.yaml")[0]
	var names []string
	exprs := map[string]string{}
	for _, g := range get(doc, "groups").([]any) {
		for _, r := range get(g, "rules").([]any) {
			name, expr := str(get(r, "alert")), str(get(r, "expr"))
			if name == "" || expr == "" {
				t.Errorf("rule %v lacks alert or expr", r)
				continue
			}
			if get(r, "labels", "severity") == nil || get(r, "annotations", "summary") == nil || get(r, "annotations", "description") == nil {
				t.Errorf("alert %s lacks a severity, summary or description", name)
			}
			if err := balanced(expr); err != nil {
				t.Errorf("alert %s: %v", name, err)
			}
			// Every alert says where to read what to do: a README section.
			runbook := str(get(r, "annotations", "runbook_url"))
			_, anchor, _ := strings.Cut(runbook, "README.md#")
			if anchor == "" || !readmeAnchors(t)[anchor] {
				t.Errorf("alert %s: runbook_url %q does not point to a README section", name, runbook)
			}
			names = append(names, name)
			exprs[name] = expr
		}
	}
	// The conditions the issue asks for, each on the metric that shows it.
	want := map[string]string{
		"ShadowproxyMatchRateLow":       `shadowproxy_comparisons_total{result="match"}`,
		"ShadowproxyShadowDrops":        `shadowproxy_shadow_requests_total{outcome="dropped"}`,
		"ShadowproxyRolloutRolledBack":  `increase(shadowproxy_rollout_transitions_total{action="rollback"}`,
		"ShadowproxyUpstreamErrors":     `shadowproxy_upstream_errors_total`,
		"ShadowproxyDown":               `== 0`,
		"ShadowproxyConfigReloadFailed": `shadowproxy_config_last_reload_successful == 0`,
	}
	for name, frag := range want {
		if !strings.Contains(exprs[name], frag) {
			t.Errorf("alert %s: expr %q does not contain %q", name, exprs[name], frag)
		}
	}
	if !strings.HasPrefix(exprs["ShadowproxyDown"], "up{") {
		t.Errorf("ShadowproxyDown: %q does not test up", exprs["ShadowproxyDown"])
	}
}

// readmeAnchors are the GitHub anchors of the README's headings.
func readmeAnchors(t *testing.T) map[string]bool {
	t.Helper()
	data, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, line := range strings.Split(string(data), "\n") {
		if !strings.HasPrefix(line, "#") {
			continue
		}
		title := strings.ToLower(strings.TrimSpace(strings.TrimLeft(line, "#")))
		var b strings.Builder
		for _, r := range title {
			switch {
			case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '-', r == '_':
				b.WriteRune(r)
			case r == ' ':
				b.WriteRune('-')
			}
		}
		out[b.String()] = true
	}
	return out
}

// balanced catches the commonest PromQL slip in hand-written rules:
// unbalanced brackets or quotes.
func balanced(expr string) error {
	var stack []rune
	pairs := map[rune]rune{')': '(', ']': '[', '}': '{'}
	inQuote := false
	for _, r := range expr {
		switch {
		case r == '"':
			inQuote = !inQuote
		case inQuote:
		case r == '(' || r == '[' || r == '{':
			stack = append(stack, r)
		case pairs[r] != 0:
			if len(stack) == 0 || stack[len(stack)-1] != pairs[r] {
				return fmt.Errorf("unbalanced %q in %q", r, expr)
			}
			stack = stack[:len(stack)-1]
		}
	}
	if inQuote || len(stack) > 0 {
		return fmt.Errorf("unclosed bracket or quote in %q", expr)
	}
	return nil
}

// ---- Grafana -------------------------------------------------------------------

// grafanaExprs returns every PromQL expression of the dashboard (panel
// targets and annotations), with where it was found.
func grafanaExprs(t *testing.T) map[string]string {
	t.Helper()
	data, err := os.ReadFile("grafana/shadowproxy.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash any
	if err := json.Unmarshal(data, &dash); err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	var walk func(v any, where string)
	walk = func(v any, where string) {
		switch x := v.(type) {
		case map[string]any:
			if title, ok := x["title"].(string); ok {
				where = title
			}
			if e, ok := x["expr"].(string); ok {
				out[e] = where
			}
			for _, c := range x {
				walk(c, where)
			}
		case []any:
			for _, c := range x {
				walk(c, where)
			}
		}
	}
	walk(dash, "dashboard")
	return out
}

func TestGrafanaDashboard(t *testing.T) {
	data, err := os.ReadFile("grafana/shadowproxy.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		UID    string `json:"uid"`
		Title  string `json:"title"`
		Panels []struct {
			ID      int    `json:"id"`
			Type    string `json:"type"`
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(data, &dash); err != nil {
		t.Fatal(err)
	}
	// A fleet is looked at per namespace and per instance: every query
	// filters on both variables.
	var vars struct {
		Templating struct {
			List []struct {
				Name string `json:"name"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(data, &vars); err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, v := range vars.Templating.List {
		names[v.Name] = true
	}
	for _, want := range []string{"namespace", "instance", "route"} {
		if !names[want] {
			t.Errorf("the dashboard has no %s variable", want)
		}
	}
	for e, where := range grafanaExprs(t) {
		if !strings.Contains(e, `namespace=~"$namespace", instance=~"$instance"`) {
			t.Errorf("%s: query %q ignores the namespace and instance variables", where, e)
		}
	}
	if dash.UID == "" || dash.Title == "" {
		t.Error("the dashboard needs a uid and a title")
	}
	ids := map[int]bool{}
	var all strings.Builder
	for _, p := range dash.Panels {
		if ids[p.ID] {
			t.Errorf("panel id %d is used twice", p.ID)
		}
		ids[p.ID] = true
		if p.Type != "row" && len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, q := range p.Targets {
			if err := balanced(q.Expr); err != nil {
				t.Errorf("panel %q: %v", p.Title, err)
			}
			all.WriteString(q.Expr + "\n")
		}
	}
	// What the issue asks the dashboard to show.
	for _, frag := range []string{
		`shadowproxy_comparisons_total{result="match"`,
		`shadowproxy_comparisons_total{result=~"match|mismatch"`,
		`shadowproxy_diff_fields_total`,
		`histogram_quantile(0.99, sum by (le, route) (rate(shadowproxy_request_duration_seconds_bucket`,
		`histogram_quantile(0.99, sum by (le, route, target) (rate(shadowproxy_shadow_duration_seconds_bucket`,
		`shadowproxy_shadow_requests_total{outcome="dropped"`,
		`shadowproxy_rollout_percent`,
		`shadowproxy_rollout_transitions_total`,
		`shadowproxy_upstream_errors_total`,
		`sum by (code) (rate(shadowproxy_requests_total`,
		// Primary latency per cohort: the stable upstream against the canary.
		`histogram_quantile(0.95, sum by (le, route, upstream) (rate(shadowproxy_request_duration_seconds_bucket`,
	} {
		if !strings.Contains(all.String(), frag) {
			t.Errorf("no dashboard query contains %q", frag)
		}
	}
}

// ---- the container image ---------------------------------------------------------

// dockerInstructions joins continuation lines and drops comments.
func dockerInstructions(t *testing.T) [][2]string {
	t.Helper()
	f, err := os.Open("Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out [][2]string
	var cur string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(line, "#") || (line == "" && cur == "") {
			continue
		}
		if strings.HasSuffix(line, "\\") {
			cur += strings.TrimSuffix(line, "\\") + " "
			continue
		}
		cur += line
		if cur = strings.TrimSpace(cur); cur != "" {
			kw, rest, _ := strings.Cut(cur, " ")
			out = append(out, [2]string{strings.ToUpper(kw), strings.TrimSpace(rest)})
		}
		cur = ""
	}
	if cur != "" {
		t.Fatal("Dockerfile ends in a continuation line")
	}
	return out
}

func TestDockerfile(t *testing.T) {
	ins := dockerInstructions(t)
	known := map[string]bool{"FROM": true, "ARG": true, "WORKDIR": true, "COPY": true, "RUN": true, "USER": true,
		"EXPOSE": true, "HEALTHCHECK": true, "ENTRYPOINT": true, "CMD": true, "ENV": true, "LABEL": true}
	var stages []string
	final := map[string][]string{}
	var build strings.Builder
	args := map[string]string{}
	for _, in := range ins {
		kw, rest := in[0], in[1]
		if !known[kw] {
			t.Errorf("Dockerfile: unknown instruction %s %s", kw, rest)
		}
		switch kw {
		case "ARG":
			k, v, _ := strings.Cut(rest, "=")
			args[k] = v
		case "FROM":
			stages = append(stages, rest)
			final = map[string][]string{}
		default:
			final[kw] = append(final[kw], rest)
		}
		if kw == "RUN" && len(stages) == 1 {
			build.WriteString(rest + "\n")
		}
	}
	if len(stages) != 2 {
		t.Fatalf("Dockerfile: %d stages (%v), want a builder and a runtime stage", len(stages), stages)
	}
	// Multi-arch: the builder runs natively and cross-compiles.
	if !strings.HasPrefix(stages[0], "--platform=$BUILDPLATFORM golang:${GO_VERSION}") || !strings.HasSuffix(stages[0], " AS build") {
		t.Errorf("Dockerfile: builder stage %q, want --platform=$BUILDPLATFORM golang:${GO_VERSION}... AS build", stages[0])
	}
	if _, ok := args["TARGETARCH"]; !ok {
		t.Error("Dockerfile: the builder does not declare ARG TARGETARCH")
	}
	// The builder's Go is the go.mod's.
	gomod, err := os.ReadFile("../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^go (\d+\.\d+)`).FindSubmatch(gomod)
	if m == nil || args["GO_VERSION"] != string(m[1]) {
		t.Errorf("Dockerfile: GO_VERSION %q, but go.mod wants go %s", args["GO_VERSION"], m[1])
	}
	if !strings.HasPrefix(stages[1], "gcr.io/distroless/static") && stages[1] != "scratch" {
		t.Errorf("Dockerfile: runtime stage %q, want distroless/static or scratch", stages[1])
	}
	b := build.String()
	for _, frag := range []string{"CGO_ENABLED=0", "go build", "./cmd/shadowproxy", "-trimpath", "GOARCH=${TARGETARCH}",
		"--mount=type=cache,target=/go/pkg/mod", "--mount=type=cache,target=/root/.cache/go-build"} {
		if !strings.Contains(b, frag) {
			t.Errorf("Dockerfile: the build does not use %q", frag)
		}
	}
	if u := final["USER"]; len(u) != 1 || !strings.HasPrefix(u[0], "nonroot") && !strings.HasPrefix(u[0], "65532") {
		t.Errorf("Dockerfile: runtime USER %v, want nonroot", u)
	}
	if len(final["RUN"]) > 0 {
		t.Errorf("Dockerfile: the runtime stage runs commands (%v), but it has no shell", final["RUN"])
	}
	if hc := final["HEALTHCHECK"]; len(hc) != 1 || hc[0] != "NONE" {
		t.Errorf("Dockerfile: HEALTHCHECK %v; the image has no shell or HTTP client, so it must be NONE (probes are HTTP)", hc)
	}
	var entry []string
	if e := final["ENTRYPOINT"]; len(e) != 1 || json.Unmarshal([]byte(e[0]), &entry) != nil || len(entry) != 1 {
		t.Errorf("Dockerfile: ENTRYPOINT %v, want the exec form with the binary", final["ENTRYPOINT"])
	}
	var cmd []string
	if c := final["CMD"]; len(c) != 1 || json.Unmarshal([]byte(c[0]), &cmd) != nil || len(cmd) < 3 || cmd[0] != "run" || cmd[1] != "-config" {
		t.Errorf("Dockerfile: CMD %v, want [\"run\", \"-config\", FILE]", final["CMD"])
	}
	copied := false
	for _, c := range final["COPY"] {
		copied = copied || strings.Contains(c, "--from=build") && strings.Contains(c, entry[0])
	}
	if !copied {
		t.Errorf("Dockerfile: the runtime stage does not copy %v from the builder", entry)
	}
	labels := strings.Join(final["LABEL"], " ")
	for _, l := range []string{"title", "description", "source", "version", "revision", "created"} {
		if !strings.Contains(labels, "org.opencontainers.image."+l+"=") {
			t.Errorf("Dockerfile: the image lacks the OCI label org.opencontainers.image.%s", l)
		}
	}
	if e := strings.Join(final["EXPOSE"], " "); !strings.Contains(e, "8080") || !strings.Contains(e, "9901") {
		t.Errorf("Dockerfile: EXPOSE %q, want 8080 and 9901", e)
	}
}

// ---- systemd -----------------------------------------------------------------------

func unitFile(t *testing.T) map[string][]string {
	t.Helper()
	data, err := os.ReadFile("systemd/shadowproxy.service")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]string{}
	section := ""
	for _, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		switch {
		case line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";"):
		case strings.HasPrefix(line, "["):
			section = strings.Trim(line, "[]")
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok {
				t.Fatalf("shadowproxy.service: not key=value: %q", line)
			}
			out[section+"."+k] = append(out[section+"."+k], v)
		}
	}
	return out
}

func TestSystemdUnit(t *testing.T) {
	u := unitFile(t)
	one := func(k string) string {
		if v := u["Service."+k]; len(v) > 0 {
			return v[len(v)-1]
		}
		return "<unset>"
	}
	for k, want := range map[string]string{
		"DynamicUser": "yes", "ProtectSystem": "strict", "ProtectHome": "yes", "NoNewPrivileges": "yes",
		"PrivateTmp": "yes", "CapabilityBoundingSet": "", "StateDirectory": "shadowproxy", "KillSignal": "SIGTERM",
	} {
		if got := one(k); got != want {
			t.Errorf("shadowproxy.service: %s=%s, want %s", k, got, want)
		}
	}
	if got := one("RestrictAddressFamilies"); !strings.Contains(got, "AF_INET") || !strings.Contains(got, "AF_INET6") {
		t.Errorf("shadowproxy.service: RestrictAddressFamilies=%s", got)
	}
	if !slices.Contains(u["Service.SystemCallFilter"], "@system-service") {
		t.Errorf("shadowproxy.service: SystemCallFilter=%v lacks @system-service", u["Service.SystemCallFilter"])
	}
	if !slices.Contains(u["Service.ExecReload"], "/bin/kill -HUP $MAINPID") {
		t.Errorf("shadowproxy.service: ExecReload=%v, want /bin/kill -HUP $MAINPID", u["Service.ExecReload"])
	}
	if len(u["Install.WantedBy"]) == 0 {
		t.Error("shadowproxy.service: no [Install] WantedBy")
	}

	// The unit runs the config next to it, which loads, and gives its
	// drain time to finish before SIGKILL.
	start := one("ExecStart")
	f := strings.Fields(start)
	if len(f) != 4 || f[1] != "run" || f[2] != "-config" {
		t.Fatalf("shadowproxy.service: ExecStart=%s, want BINARY run -config FILE", start)
	}
	data, err := os.ReadFile("systemd/config.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load("systemd/config.yaml", data, lookupEnv)
	if err != nil {
		t.Fatalf("systemd/config.yaml does not load:\n%v", err)
	}
	if w := cfg.Warnings(); len(w) > 0 {
		t.Errorf("systemd/config.yaml has warnings: %v", w)
	}
	// Rollout state must go where the unit lets the service write.
	stateDir := "/var/lib/" + one("StateDirectory") + "/"
	rollouts := 0
	for _, r := range cfg.Routes {
		if r.Rollout != nil {
			rollouts++
			if !strings.HasPrefix(r.Rollout.StateFile, stateDir) {
				t.Errorf("systemd/config.yaml: route %s keeps its rollout state in %q, outside the unit's StateDirectory %s", r.Name, r.Rollout.StateFile, stateDir)
			}
		}
	}
	if rollouts == 0 {
		t.Error("systemd/config.yaml has no rollout, so nothing shows where its state goes")
	}
	stop, err := time.ParseDuration(one("TimeoutStopSec"))
	if err != nil {
		t.Fatalf("shadowproxy.service: TimeoutStopSec=%s: %v", one("TimeoutStopSec"), err)
	}
	if stop <= cfg.Limits.ShutdownTimeout.D() {
		t.Errorf("shadowproxy.service: TimeoutStopSec %s must exceed limits.shutdown_timeout %s", stop, cfg.Limits.ShutdownTimeout.D())
	}
}

// ---- metric names against a running proxy --------------------------------------------

var metricRef = regexp.MustCompile(`\bshadowproxy_[a-z0-9_]+`)

// usedMetrics maps every shadowproxy metric family queried by the Grafana
// dashboard and the alert rules to one place that uses it.
func usedMetrics(t *testing.T) map[string]string {
	t.Helper()
	used := map[string]string{}
	add := func(expr, where string) {
		for _, m := range metricRef.FindAllString(expr, -1) {
			for _, suf := range []string{"_bucket", "_sum", "_count"} {
				if strings.HasSuffix(m, suf) && (strings.HasSuffix(m, "_seconds"+suf) || strings.HasSuffix(m, "_bytes"+suf)) {
					m = strings.TrimSuffix(m, suf)
				}
			}
			used[m] = where
		}
	}
	for e, where := range grafanaExprs(t) {
		add(e, "grafana: "+where)
	}
	doc := yamlDocs(t, "prometheus/alerts.yaml")[0]
	for _, g := range get(doc, "groups").([]any) {
		for _, r := range get(g, "rules").([]any) {
			add(str(get(r, "expr")), "alert "+str(get(r, "alert")))
		}
	}
	return used
}

func TestMetricNamesAreExported(t *testing.T) {
	used := usedMetrics(t)
	if len(used) < 10 {
		t.Fatalf("only %d shadowproxy metrics referenced: %v", len(used), used)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	adminURL, proxyURL := startProxy(t)
	client := &http.Client{Timeout: 5 * time.Second}

	// Traffic through every demo route: shadowing and comparison on /api/,
	// the split on /checkout/.
	if st, err := demo.Traffic(ctx, proxyURL, 400, 200); err != nil || st.OK == 0 {
		t.Fatalf("demo traffic: %+v %v", st, err)
	}
	// Upstream errors: a route to a closed port answers 502.
	for range 3 {
		resp, err := client.Get(proxyURL + "/gone/x")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadGateway {
			t.Fatalf("GET /gone/x through the proxy: %s, want 502", resp.Status)
		}
	}
	// A successful reload, so reload counters exist.
	post(t, client, adminURL+"/api/v1/reload", http.StatusOK)
	// Rollout transitions: pause and resume each rollout.
	var rollouts []struct {
		Route string `json:"route"`
		State string `json:"state"`
	}
	testkit.GetJSON(t, client, adminURL+"/api/v1/rollouts", &rollouts)
	for _, r := range rollouts {
		if r.State == "progressing" {
			post(t, client, adminURL+"/api/v1/rollouts/"+r.Route+"/pause", http.StatusOK)
			post(t, client, adminURL+"/api/v1/rollouts/"+r.Route+"/resume", http.StatusOK)
		}
	}

	// Comparisons finish after the responses; poll until every family is
	// there or the deadline passes.
	deadline := time.Now().Add(15 * time.Second)
	var missing []string
	for {
		exported := exportedFamilies(t, client, adminURL)
		missing = missing[:0]
		for name := range used {
			if !exported[name] {
				missing = append(missing, name)
			}
		}
		if len(missing) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	sort.Strings(missing)
	for _, name := range missing {
		t.Errorf("%s (used by %s) is not exported by the proxy's /metrics", name, used[name])
	}
}

// startProxy runs the demo backends and a whole App on 127.0.0.1:0 ports,
// with one more route ("gone", /gone/) whose upstream is a closed port.
func startProxy(t *testing.T) (adminURL, proxyURL string) {
	t.Helper()
	bs := apptest.DemoBackends(t)
	text := withGoneRoute(t, demo.ConfigYAML(bs, "127.0.0.1:0", "127.0.0.1:0"), "http://"+testkit.ClosedAddr(t))
	load := func() (*config.Config, error) { return config.Load("demo.yaml", []byte(text), apptest.NoEnv) }
	run := apptest.Start(t, text, app.Options{Version: "deploy-test", ReloadFunc: load})
	return run.AdminURL, run.ProxyURL
}

// withGoneRoute adds an upstream at url and a first route /gone/ to it.
func withGoneRoute(t *testing.T, text, url string) string {
	t.Helper()
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte(text), &doc); err != nil {
		t.Fatal(err)
	}
	node := func(s string) *yaml.Node {
		var n yaml.Node
		if err := yaml.Unmarshal([]byte(s), &n); err != nil {
			t.Fatal(err)
		}
		return n.Content[0]
	}
	root := doc.Content[0]
	for i := 0; i+1 < len(root.Content); i += 2 {
		switch v := root.Content[i+1]; root.Content[i].Value {
		case "upstreams":
			v.Content = append(v.Content, node(fmt.Sprintf("{name: gone, url: %q, timeout: 2s, connect_timeout: 1s}", url)))
		case "routes":
			v.Content = append([]*yaml.Node{node("{name: gone, match: {path_prefix: /gone/}, upstream: gone}")}, v.Content...)
		}
	}
	out, err := yaml.Marshal(&doc)
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

func exportedFamilies(t *testing.T, c *http.Client, adminURL string) map[string]bool {
	t.Helper()
	resp, err := c.Get(adminURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %s", resp.Status)
	}
	out := map[string]bool{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		// "# TYPE name kind" declares a family, but only families with at
		// least one series are written at all.
		if f := strings.Fields(sc.Text()); len(f) == 4 && f[0] == "#" && f[1] == "TYPE" {
			out[f[2]] = true
		}
	}
	return out
}

func post(t *testing.T, c *http.Client, url string, want int) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	// A loopback admin listener without a token takes mutations only with
	// this header (CSRF guard).
	req.Header.Set("X-Shadowproxy-Admin", "1")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != want {
		t.Fatalf("POST %s: %s %s", url, resp.Status, body)
	}
}

// checkEdgeFleet: the edge runs its rollout in fleet mode against the etcd
// Service of the etcd base, each pod advertising its own admin port and keeping
// the fleet state on a writable volume.
func checkEdgeFleet(t *testing.T, file string, cfg *config.Config, proxy map[string]any) {
	t.Helper()
	f := cfg.Fleet
	if f == nil {
		t.Fatalf("%s: the edge configuration has no fleet section", file)
	}
	var rollouts int
	for _, r := range cfg.Routes {
		if r.Rollout != nil {
			rollouts++
		}
	}
	if rollouts == 0 {
		t.Errorf("%s: fleet mode without a rollout", file)
	}
	if f.Name != testEnv["POD_NAME"] || f.Advertise != "http://"+testEnv["POD_IP"]+":"+strconv.Itoa(portOf(t, cfg.AdminListen)) {
		t.Errorf("%s: fleet name %q / advertise %q are not the pod's own", file, f.Name, f.Advertise)
	}
	mounted := false
	for _, m := range get(proxy, "volumeMounts").([]any) {
		mp := str(get(m, "mountPath"))
		if get(m, "readOnly") != true && strings.HasPrefix(f.StateDir, mp+"/") {
			mounted = true
		}
	}
	if !mounted {
		t.Errorf("%s: fleet.state_dir %s is not on a writable volume (the root filesystem is read-only)", file, f.StateDir)
	}
	docs := yamlDocs(t, "kubernetes/base/etcd/etcd.yaml")
	svcs := byKind(docs, "Service")
	if len(svcs) != 1 || len(byKind(docs, "StatefulSet")) != 1 {
		t.Fatal("kubernetes/base/etcd/etcd.yaml: want one StatefulSet and one Service")
	}
	// Short Service name: it resolves in the proxy's own namespace, which
	// the overlay chooses for both.
	host := str(get(svcs[0], "metadata", "name")) + ":2379"
	if len(f.Etcd.Endpoints) != 1 || f.Etcd.Endpoints[0] != "http://"+host {
		t.Errorf("%s: fleet.etcd.endpoints %v do not name the etcd base's Service (%s)", file, f.Etcd.Endpoints, host)
	}
}
