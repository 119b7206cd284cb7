package proxy

import (
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

func zapString(k, v string) zapcore.Field { return zap.String(k, v) }
