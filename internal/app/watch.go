package app

import (
	"bytes"
	"context"
	"crypto/sha256"
	"os"
	"time"

	"go.uber.org/zap"
)

// watchInterval is how often watch_config looks at the file. Polling (not
// inotify) works the same for files edited in place, replaced by rename, or
// updated through a Kubernetes ConfigMap's symlink swap.
const watchInterval = 2 * time.Second

// watchConfig reloads when the file's content changes, until ctx ends.
func (a *App) watchConfig(ctx context.Context, path string, interval time.Duration) {
	last := fileSum(path)
	tk := time.NewTicker(interval)
	defer tk.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tk.C:
		}
		sum := fileSum(path)
		if sum == nil || bytes.Equal(sum, last) {
			continue
		}
		last = sum
		a.log.Info("configuration file changed; reloading", zap.String("path", path))
		a.Reload()
	}
}

func fileSum(path string) []byte {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	s := sha256.Sum256(b)
	return s[:]
}
