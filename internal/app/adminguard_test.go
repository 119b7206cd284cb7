package app

import (
	"net/http"

	"github.com/shadowproxy/shadowproxy/internal/admin"
)

// adminPost sends a mutation as the dashboard and the CLI do on a loopback
// listener without a token: with the admin.CSRFHeader field.
func adminPost(url string) (*http.Response, error) {
	req, err := http.NewRequest(http.MethodPost, url, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set(admin.CSRFHeader, "1")
	return http.DefaultClient.Do(req)
}
