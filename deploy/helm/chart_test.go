package helm

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"gopkg.in/yaml.v3"
	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/engine"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/shadowproxy/shadowproxy/config"
	"github.com/shadowproxy/shadowproxy/internal/admin"
	"github.com/shadowproxy/shadowproxy/internal/testkit/manifest"
)

const chartDir = "shadowproxy"

// obj is one rendered Kubernetes object.
type obj = map[string]any

// render renders the chart with the values of file (none when "") layered
// over values.yaml, as `helm template` would for release "shop".
func render(t *testing.T, file string, extra map[string]any) ([]obj, error) {
	t.Helper()
	ch, err := loader.Load(chartDir)
	if err != nil {
		t.Fatalf("load chart: %v", err)
	}
	vals := map[string]any{}
	if file != "" {
		v, err := chartutil.ReadValuesFile(file)
		if err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		vals = v
	}
	vals = chartutil.CoalesceTables(extra, vals)
	return renderChart(t, ch, vals)
}

func renderChart(t *testing.T, ch *chart.Chart, vals map[string]any) ([]obj, error) {
	t.Helper()
	caps := chartutil.DefaultCapabilities.Copy()
	caps.KubeVersion = chartutil.KubeVersion{Version: "v1.31.0", Major: "1", Minor: "31"}
	rv, err := chartutil.ToRenderValues(ch, vals, chartutil.ReleaseOptions{Name: "shop", Namespace: "shop-prod", IsInstall: true}, caps)
	if err != nil {
		return nil, err
	}
	out, err := engine.Render(ch, rv)
	if err != nil {
		return nil, err
	}
	var objs []obj
	names := make([]string, 0, len(out))
	for n := range out {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, name := range names {
		if !strings.HasSuffix(name, ".yaml") {
			continue
		}
		dec := yaml.NewDecoder(strings.NewReader(out[name]))
		for {
			var o obj
			err := dec.Decode(&o)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("%s renders invalid YAML: %v\n%s", name, err, out[name])
			}
			if o != nil {
				objs = append(objs, o)
			}
		}
	}
	return objs, nil
}

// get, str, byKind, labelsMatch and portOf are short names for the
// manifest helpers, which deploy's and deploy/helm's tests share.
func get(v any, path ...any) any { return manifest.Get(v, path...) }

func str(v any) string { return manifest.Str(v) }

func list(v any) []any { l, _ := v.([]any); return l }

func byKind(objs []obj, kind string) []obj { return manifest.ByKind(objs, kind) }

func one(t *testing.T, objs []obj, kind string) obj {
	t.Helper()
	l := byKind(objs, kind)
	if len(l) != 1 {
		t.Fatalf("%d objects of kind %s, want 1", len(l), kind)
	}
	return l[0]
}

func labelsMatch(selector, labels any) bool { return manifest.LabelsMatch(selector, labels) }

// adminServer is the real admin handler on loopback: a probe path that it
// does not answer with 200 is a probe that would fail in the cluster.
func adminServer(t *testing.T) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(admin.Handler(admin.Options{
		Registry: prometheus.NewRegistry(),
		Ready:    func() bool { return true },
		Token:    "0123456789abcdef0123456789abcdef",
	}))
	t.Cleanup(srv.Close)
	return srv
}

func checkAdminPath(t *testing.T, srv *httptest.Server, what, path string) {
	t.Helper()
	resp, err := http.Get(srv.URL + path)
	if err != nil {
		t.Fatalf("%s: GET %s: %v", what, path, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("%s: GET %s on the admin listener answers %d, want 200", what, path, resp.StatusCode)
	}
}

// workload is the pod of the rendered Deployment and its proxy container.
type workload struct {
	dep, pod, spec, proxy obj
	native                bool // the proxy is a native sidecar
}

func findWorkload(t *testing.T, objs []obj) workload {
	t.Helper()
	w := workload{dep: one(t, objs, "Deployment")}
	w.pod, _ = get(w.dep, "spec", "template").(obj)
	w.spec, _ = get(w.pod, "spec").(obj)
	for _, c := range list(get(w.spec, "containers")) {
		if get(c, "name") == "shadowproxy" {
			w.proxy = c.(obj)
		}
	}
	for _, c := range list(get(w.spec, "initContainers")) {
		if get(c, "name") == "shadowproxy" {
			w.proxy, w.native = c.(obj), true
		}
	}
	if w.proxy == nil {
		t.Fatal("no shadowproxy container in the Deployment")
	}
	if !labelsMatch(get(w.dep, "spec", "selector", "matchLabels"), get(w.pod, "metadata", "labels")) {
		t.Error("the Deployment's selector does not match its pod labels")
	}
	return w
}

func (w workload) containerPort(name string) int {
	for _, p := range list(get(w.proxy, "ports")) {
		if get(p, "name") == name {
			n, _ := get(p, "containerPort").(int)
			return n
		}
	}
	return 0
}

func (w workload) env(name string) any {
	for _, e := range list(get(w.proxy, "env")) {
		if get(e, "name") == name {
			return e
		}
	}
	return nil
}

func portOf(t *testing.T, addr string) int { t.Helper(); return manifest.PortOf(t, addr) }

// loadConfig loads the configuration the chart renders with the project's
// own loader (defaults and validation), as `shadowproxy validate` would.
func loadConfig(t *testing.T, objs []obj, w workload) (*config.Config, bool) {
	t.Helper()
	args := list(get(w.proxy, "args"))
	i := slices.Index(args, any("-config"))
	if i < 0 || i+1 >= len(args) {
		t.Fatalf("proxy args %v lack -config FILE", args)
	}
	file := str(args[i+1])
	var cmName string
	for _, m := range list(get(w.proxy, "volumeMounts")) {
		if strings.HasPrefix(file, str(get(m, "mountPath"))+"/") {
			for _, v := range list(get(w.spec, "volumes")) {
				if get(v, "name") == get(m, "name") {
					cmName = str(get(v, "configMap", "name"))
				}
			}
		}
	}
	if cmName == "" {
		t.Fatalf("%s is not on a ConfigMap volume of the proxy", file)
	}
	for _, cm := range byKind(objs, "ConfigMap") {
		if get(cm, "metadata", "name") != cmName {
			continue
		}
		text := str(get(cm, "data", filepath.Base(file)))
		if text == "" {
			t.Fatalf("ConfigMap %s has no key %s", cmName, filepath.Base(file))
		}
		env := map[string]string{}
		for _, e := range list(get(w.proxy, "env")) {
			env[str(get(e, "name"))] = "0123456789abcdef0123456789abcdef"
		}
		cfg, err := config.Load(cmName+":"+filepath.Base(file), []byte(text), func(k string) (string, bool) {
			v, ok := env[k]
			return v, ok
		})
		if err != nil {
			t.Fatalf("the rendered configuration does not load:\n%v\n%s", err, text)
		}
		if ws := cfg.Warnings(); len(ws) > 0 {
			t.Errorf("the rendered configuration has warnings: %v", ws)
		}
		return cfg, true
	}
	return nil, false // an existing ConfigMap, not the chart's
}

func TestCIValues(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(chartDir, "ci", "*.yaml"))
	if err != nil || len(files) < 3 {
		t.Fatalf("ci values files: %v %v, want at least 3", files, err)
	}
	srv := adminServer(t)
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			objs, err := render(t, f, nil)
			if err != nil {
				t.Fatalf("render: %v", err)
			}
			checkCommon(t, srv, objs)
		})
	}
	t.Run("defaults", func(t *testing.T) {
		objs, err := render(t, "", nil)
		if err != nil {
			t.Fatalf("render: %v", err)
		}
		checkCommon(t, srv, objs)
	})
}

// checkCommon holds for every values file.
func checkCommon(t *testing.T, srv *httptest.Server, objs []obj) {
	t.Helper()
	for _, o := range objs {
		if get(o, "metadata", "namespace") != nil {
			t.Errorf("%s %s hard-codes namespace %v", o["kind"], get(o, "metadata", "name"), get(o, "metadata", "namespace"))
		}
		if o["apiVersion"] == nil || get(o, "metadata", "name") == nil {
			t.Errorf("object %v lacks apiVersion or metadata.name", o)
		}
	}
	w := findWorkload(t, objs)

	// Probes hit paths the admin listener really serves, on its port.
	probes := []string{"readinessProbe", "livenessProbe"}
	if w.native {
		probes = append(probes, "startupProbe")
	}
	for _, p := range probes {
		if str(get(w.proxy, p, "httpGet", "port")) != "admin" {
			t.Errorf("%s probes port %v, want admin", p, get(w.proxy, p, "httpGet", "port"))
		}
		checkAdminPath(t, srv, p, str(get(w.proxy, p, "httpGet", "path")))
	}
	ann := get(w.pod, "metadata", "annotations")
	if str(get(ann, "prometheus.io/port")) != strconv.Itoa(w.containerPort("admin")) {
		t.Errorf("prometheus.io/port %v is not the admin port %d", get(ann, "prometheus.io/port"), w.containerPort("admin"))
	}
	checkAdminPath(t, srv, "prometheus.io/path", str(get(ann, "prometheus.io/path")))

	// Hardening.
	if get(w.spec, "securityContext", "runAsNonRoot") != true {
		t.Error("pod securityContext.runAsNonRoot is not true")
	}
	sc := get(w.proxy, "securityContext")
	if get(sc, "readOnlyRootFilesystem") != true || get(sc, "allowPrivilegeEscalation") != false ||
		!reflect.DeepEqual(get(sc, "capabilities", "drop"), []any{"ALL"}) {
		t.Errorf("proxy securityContext %v: want a read-only root, no privilege escalation, drop ALL", sc)
	}
	for _, r := range []string{"requests", "limits"} {
		if get(w.proxy, "resources", r, "memory") == nil {
			t.Errorf("proxy has no resources.%s.memory", r)
		}
	}

	// GOMEMLIMIT at about 90% of the memory limit.
	lim, err := resource.ParseQuantity(str(get(w.proxy, "resources", "limits", "memory")))
	if err != nil {
		t.Fatalf("limits.memory: %v", err)
	}
	gml, err := strconv.ParseInt(str(get(w.env("GOMEMLIMIT"), "value")), 10, 64)
	if err != nil {
		t.Fatalf("GOMEMLIMIT %v is not a byte count: %v", get(w.env("GOMEMLIMIT"), "value"), err)
	}
	if r := float64(gml) / float64(lim.Value()); r < 0.85 || r > 0.95 {
		t.Errorf("GOMEMLIMIT %d is %.3f of the memory limit %s, want about 0.9", gml, r, lim.String())
	}
	// The admin token comes from a Secret.
	if get(w.env("ADMIN_TOKEN"), "valueFrom", "secretKeyRef", "name") == nil {
		t.Error("ADMIN_TOKEN does not come from a Secret")
	}

	cfg, own := loadConfig(t, objs, w)
	if own {
		if portOf(t, cfg.Listen) != w.containerPort("http") || portOf(t, cfg.AdminListen) != w.containerPort("admin") {
			t.Errorf("listen %s / admin_listen %s do not match the container ports", cfg.Listen, cfg.AdminListen)
		}
		if cfg.Admin.Token == "" {
			t.Error("the configuration has no admin token, but the admin listener is not on loopback")
		}
		if len(cfg.TrustedProxies) > 0 {
			t.Errorf("trusted_proxies %v: any pod in those ranges could spoof client addresses", cfg.TrustedProxies)
		}
		checkSecondaries(t, cfg)
		// SIGKILL must not come before the drain ends.
		grace, _ := get(w.spec, "terminationGracePeriodSeconds").(int)
		sleep, _ := get(w.proxy, "lifecycle", "preStop", "sleep", "seconds").(int)
		if w.native {
			sleep = appContainer(t, w)["preStop"].(int)
		}
		if need := sleep + int(cfg.Limits.ShutdownTimeout.D().Seconds()); grace <= need {
			t.Errorf("terminationGracePeriodSeconds %d must exceed preStop sleep + shutdown_timeout = %ds", grace, need)
		}
	} else if len(byKind(objs, "ConfigMap")) > 0 && get(byKind(objs, "ConfigMap")[0], "metadata", "labels", "grafana_dashboard") == nil {
		t.Error("with an existing ConfigMap the chart must not render its own")
	}

	// Services: the public one only reaches the proxy port, the admin one
	// only the admin port, and both select the pods.
	for _, svc := range byKind(objs, "Service") {
		if !labelsMatch(get(svc, "spec", "selector"), get(w.pod, "metadata", "labels")) {
			t.Errorf("Service %v does not select the pods", get(svc, "metadata", "name"))
		}
		var targets []string
		for _, p := range list(get(svc, "spec", "ports")) {
			targets = append(targets, str(get(p, "targetPort")))
		}
		if !reflect.DeepEqual(targets, []string{"http"}) && !reflect.DeepEqual(targets, []string{"admin"}) {
			t.Errorf("Service %v targets %v, want only http or only admin", get(svc, "metadata", "name"), targets)
		}
	}
	for _, pdb := range byKind(objs, "PodDisruptionBudget") {
		if !labelsMatch(get(pdb, "spec", "selector", "matchLabels"), get(w.pod, "metadata", "labels")) {
			t.Error("the PodDisruptionBudget does not select the pods")
		}
	}
	for _, hpa := range byKind(objs, "HorizontalPodAutoscaler") {
		if get(hpa, "spec", "scaleTargetRef", "name") != get(w.dep, "metadata", "name") || get(hpa, "spec", "scaleTargetRef", "kind") != "Deployment" {
			t.Error("the HorizontalPodAutoscaler does not scale the Deployment")
		}
		if get(w.dep, "spec", "replicas") != nil {
			t.Error("with autoscaling the Deployment must not set replicas (each upgrade would reset the HPA's count)")
		}
	}
	checkMonitoring(t, objs, w)
}

// checkSecondaries: a route's secondary (which teaches noise) must not be
// the primary's Service, or it may be the very pod that answered.
func checkSecondaries(t *testing.T, cfg *config.Config) {
	t.Helper()
	host := func(name string) string {
		u := cfg.Upstream(name)
		if u == nil {
			return ""
		}
		p, err := url.Parse(u.URL)
		if err != nil {
			t.Fatalf("upstream %s: %v", name, err)
		}
		return p.Host
	}
	for _, r := range cfg.Routes {
		if r.Shadow == nil || r.Shadow.Compare == nil || r.Shadow.Compare.Secondary == "" {
			continue
		}
		if host(r.Shadow.Compare.Secondary) == host(r.Upstream) {
			t.Errorf("route %s: secondary %s is the primary's Service %s", r.Name, r.Shadow.Compare.Secondary, host(r.Upstream))
		}
	}
}

func appContainer(t *testing.T, w workload) map[string]any {
	t.Helper()
	cs := list(get(w.spec, "containers"))
	if len(cs) != 1 {
		t.Fatalf("sidecar layout: %d main containers, want the application alone", len(cs))
	}
	sleep, _ := get(cs[0], "lifecycle", "preStop", "sleep", "seconds").(int)
	return map[string]any{"c": cs[0], "preStop": sleep}
}

func checkMonitoring(t *testing.T, objs []obj, w workload) {
	t.Helper()
	for _, sm := range byKind(objs, "ServiceMonitor") {
		found := false
		for _, svc := range byKind(objs, "Service") {
			if labelsMatch(get(sm, "spec", "selector", "matchLabels"), get(svc, "metadata", "labels")) {
				found = true
				if str(get(svc, "spec", "ports", 0, "targetPort")) != "admin" {
					t.Errorf("the ServiceMonitor selects Service %v, which is not the admin one", get(svc, "metadata", "name"))
				}
			}
		}
		if !found || get(sm, "spec", "endpoints", 0, "port") != "admin" || get(sm, "spec", "endpoints", 0, "path") != "/metrics" {
			t.Errorf("the ServiceMonitor does not scrape the admin Service's /metrics: %v", get(sm, "spec"))
		}
	}
	for _, pm := range byKind(objs, "PodMonitor") {
		if !labelsMatch(get(pm, "spec", "selector", "matchLabels"), get(w.pod, "metadata", "labels")) ||
			get(pm, "spec", "podMetricsEndpoints", 0, "port") != "admin" {
			t.Errorf("the PodMonitor does not scrape the pods' admin port: %v", get(pm, "spec"))
		}
	}
	for _, pr := range byKind(objs, "PrometheusRule") {
		var want any
		data, err := os.ReadFile("../prometheus/alerts.yaml")
		if err != nil {
			t.Fatal(err)
		}
		if err := yaml.Unmarshal(data, &want); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(get(pr, "spec"), want) {
			t.Error("the PrometheusRule's spec differs from deploy/prometheus/alerts.yaml")
		}
	}
	for _, cm := range byKind(objs, "ConfigMap") {
		if get(cm, "metadata", "labels", "grafana_dashboard") == nil {
			continue
		}
		var got, want any
		if err := json.Unmarshal([]byte(str(get(cm, "data", "shadowproxy.json"))), &got); err != nil {
			t.Fatalf("the dashboard ConfigMap's JSON: %v", err)
		}
		data, _ := os.ReadFile("../grafana/shadowproxy.json")
		if err := json.Unmarshal(data, &want); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Error("the dashboard ConfigMap differs from deploy/grafana/shadowproxy.json")
		}
	}
}

func kinds(objs []obj) []string {
	var out []string
	for _, o := range objs {
		out = append(out, str(o["kind"]))
	}
	slices.Sort(out)
	return out
}

func TestKindsPerValuesFile(t *testing.T) {
	for _, tc := range []struct {
		file string
		want []string
	}{
		{"", []string{"ConfigMap", "Deployment", "PodDisruptionBudget", "Service", "Service"}},
		{"edge-values.yaml", []string{"ConfigMap", "ConfigMap", "Deployment", "HorizontalPodAutoscaler", "PodDisruptionBudget", "PrometheusRule", "Service", "Service", "ServiceMonitor"}},
		{"sidecar-values.yaml", []string{"ConfigMap", "Deployment", "NetworkPolicy", "PodMonitor", "PrometheusRule", "Service", "Service"}},
		{"existing-configmap-values.yaml", []string{"Deployment", "PodDisruptionBudget", "Service", "Service"}},
	} {
		t.Run(tc.file, func(t *testing.T) {
			f := ""
			if tc.file != "" {
				f = filepath.Join(chartDir, "ci", tc.file)
			}
			objs, err := render(t, f, nil)
			if err != nil {
				t.Fatal(err)
			}
			if got := kinds(objs); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("kinds %v, want %v", got, tc.want)
			}
		})
	}
}

func TestSidecarIsNative(t *testing.T) {
	objs, err := render(t, filepath.Join(chartDir, "ci", "sidecar-values.yaml"), nil)
	if err != nil {
		t.Fatal(err)
	}
	w := findWorkload(t, objs)
	if !w.native || get(w.proxy, "restartPolicy") != "Always" {
		t.Fatalf("the proxy is not a native sidecar (an init container with restartPolicy Always): %v", w.proxy)
	}
	if get(w.proxy, "startupProbe") == nil {
		t.Error("no startup probe: the application would start before the proxy answers")
	}
	app := appContainer(t, w)["c"]
	probe := get(app, "readinessProbe")
	if probe == nil {
		t.Fatal("the application container has no readiness probe of its own")
	}
	appPort := get(app, "ports", 0, "containerPort")
	if p := get(probe, "httpGet", "port"); str(p) != str(appPort) && str(p) != str(get(app, "ports", 0, "name")) {
		t.Errorf("the application's readiness probe targets port %v, not the application's %v", p, appPort)
	}
	// Other pods reach the proxy's ports only.
	np := one(t, objs, "NetworkPolicy")
	if !labelsMatch(get(np, "spec", "podSelector", "matchLabels"), get(w.pod, "metadata", "labels")) {
		t.Error("the NetworkPolicy does not select the pods")
	}
	var ports []string
	for _, r := range list(get(np, "spec", "ingress")) {
		if get(r, "ports") == nil {
			t.Error("a NetworkPolicy ingress rule admits every port")
		}
		for _, p := range list(get(r, "ports")) {
			ports = append(ports, str(get(p, "port")))
		}
	}
	if slices.Sort(ports); !reflect.DeepEqual(ports, []string{"admin", "http"}) {
		t.Errorf("the NetworkPolicy admits %v, want only the proxy's http and admin ports", ports)
	}
	// The proxy forwards to the application in its pod.
	cfg, _ := loadConfig(t, objs, w)
	if !strings.HasPrefix(cfg.Upstream(cfg.Routes[len(cfg.Routes)-1].Upstream).URL, "http://127.0.0.1:"+str(appPort)) {
		t.Errorf("the default route does not go to the application on 127.0.0.1:%v", appPort)
	}
}

func TestExistingConfigMapAndSecret(t *testing.T) {
	objs, err := render(t, filepath.Join(chartDir, "ci", "existing-configmap-values.yaml"), nil)
	if err != nil {
		t.Fatal(err)
	}
	w := findWorkload(t, objs)
	var vol string
	for _, v := range list(get(w.spec, "volumes")) {
		if n := str(get(v, "configMap", "name")); n != "" {
			vol = n
		}
	}
	if vol != "shop-edge-config" || !slices.Contains(list(get(w.proxy, "args")), any("/etc/shadowproxy/shadowproxy.yaml")) {
		t.Errorf("the proxy reads ConfigMap %q with args %v, want shop-edge-config's key shadowproxy.yaml", vol, get(w.proxy, "args"))
	}
	ref := get(w.env("ADMIN_TOKEN"), "valueFrom", "secretKeyRef")
	if str(get(ref, "name")) != "shop-admin" || str(get(ref, "key")) != "admin-token" {
		t.Errorf("ADMIN_TOKEN from %v, want Secret shop-admin key admin-token", ref)
	}
}

func TestBadValuesFailToRender(t *testing.T) {
	for _, tc := range []struct {
		name   string
		values map[string]any
		want   string
	}{
		{"unknown mode", map[string]any{"mode": "mesh"}, `mode "mesh": use edge or sidecar`},
		{"memory unit", map[string]any{"resources": map[string]any{"limits": map[string]any{"memory": "512Xi"}}}, `unknown unit "Xi"`},
		{"monitor without admin Service", map[string]any{"serviceMonitor": map[string]any{"enabled": true}, "adminService": map[string]any{"enabled": false}}, "needs adminService.enabled"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := render(t, "", tc.values)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("render error %v, want one containing %q", err, tc.want)
			}
		})
	}
}

func TestGoMemLimitUnits(t *testing.T) {
	for _, q := range []string{"256Mi", "1Gi", "1.5Gi", "500M", "2G", "1048576000"} {
		objs, err := render(t, "", map[string]any{"resources": map[string]any{"limits": map[string]any{"memory": q}}})
		if err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		w := findWorkload(t, objs)
		mq := resource.MustParse(q)
		want := mq.Value() * 9 / 10
		got, _ := strconv.ParseInt(str(get(w.env("GOMEMLIMIT"), "value")), 10, 64)
		if d := got - want; d < -1 || d > 1 {
			t.Errorf("limits.memory %s: GOMEMLIMIT %d, want %d", q, got, want)
		}
	}
}

// The chart carries copies of the dashboard and the alerts (a chart cannot
// read files outside its directory); they must stay identical.
func TestChartFilesMatchDeploy(t *testing.T) {
	for chartFile, orig := range map[string]string{
		"files/dashboard.json": "../grafana/shadowproxy.json",
		"files/alerts.yaml":    "../prometheus/alerts.yaml",
	} {
		a, err1 := os.ReadFile(filepath.Join(chartDir, chartFile))
		b, err2 := os.ReadFile(orig)
		if err1 != nil || err2 != nil {
			t.Fatal(err1, err2)
		}
		if !bytes.Equal(a, b) {
			t.Errorf("%s differs from deploy/%s: copy it again (cp deploy/%s deploy/helm/shadowproxy/%s)", chartFile, orig[3:], orig[3:], chartFile)
		}
	}
}
