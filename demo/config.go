package demo

import "fmt"

// ConfigYAML is the demo's configuration for the given backends and
// listeners. It goes through the same loader and validation as a user's file.
func ConfigYAML(bs *Backends, listen, adminListen string) string {
	return fmt.Sprintf(`# The built-in demo configuration (shadowproxy demo -print-config shows it).
listen: %s
admin_listen: %s
log: {level: info, format: console}
upstreams:
  - name: v1
    url: %s
    timeout: 5s
  - name: v1-twin
    url: %s
    timeout: 5s
  - name: v2
    url: %s
    timeout: 5s
routes:
  - name: api
    match: {path_prefix: /api/}
    upstream: v1
  - name: checkout
    match: {path_prefix: /checkout/}
    upstream: v1
  - name: default
    upstream: v1
`, listen, adminListen, bs.V1.URL, bs.Twin.URL, bs.V2.URL)
}
