package tracing

import (
	"context"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.uber.org/zap"
)

// queueProcessor is the bounded hand-off between ending spans and the
// batch processor: OnEnd never blocks, and a span that finds the queue full
// is dropped and counted. (The SDK's batch processor drops silently when
// it is full; in blocking mode behind this queue it never has to.)
type queueProcessor struct {
	next    sdktrace.SpanProcessor
	ch      chan queueItem
	dropped prometheus.Counter
	done    chan struct{}
	once    sync.Once
}

// queueItem is a span or, with flush set, a request to flush (and, with
// stop, to shut down) once everything before it is handed on.
type queueItem struct {
	span  sdktrace.ReadOnlySpan
	flush chan error
	ctx   context.Context
	stop  bool
}

func newQueueProcessor(next sdktrace.SpanProcessor, size int, dropped prometheus.Counter) *queueProcessor {
	q := &queueProcessor{next: next, ch: make(chan queueItem, size), dropped: dropped, done: make(chan struct{})}
	go q.run()
	return q
}

func (q *queueProcessor) run() {
	defer close(q.done)
	for it := range q.ch {
		switch {
		case it.flush == nil:
			q.next.OnEnd(it.span)
		case it.stop:
			it.flush <- q.next.Shutdown(it.ctx)
			return
		default:
			it.flush <- q.next.ForceFlush(it.ctx)
		}
	}
}

func (q *queueProcessor) OnStart(context.Context, sdktrace.ReadWriteSpan) {}

func (q *queueProcessor) OnEnd(s sdktrace.ReadOnlySpan) {
	select {
	case <-q.done:
		return
	default:
	}
	select {
	case q.ch <- queueItem{span: s}:
	default:
		q.dropped.Inc()
	}
}

func (q *queueProcessor) control(ctx context.Context, stop bool) error {
	res := make(chan error, 1)
	select {
	case q.ch <- queueItem{flush: res, ctx: ctx, stop: stop}:
	case <-q.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-res:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (q *queueProcessor) ForceFlush(ctx context.Context) error { return q.control(ctx, false) }

func (q *queueProcessor) Shutdown(ctx context.Context) error {
	var err error
	q.once.Do(func() { err = q.control(ctx, true) })
	return err
}

// countingExporter counts exported and failed spans and logs failures.
type countingExporter struct {
	next     sdktrace.SpanExporter
	exported prometheus.Counter
	failed   prometheus.Counter
	log      *zap.Logger
	endpoint string
}

func (e *countingExporter) ExportSpans(ctx context.Context, spans []sdktrace.ReadOnlySpan) error {
	t0 := time.Now()
	err := e.next.ExportSpans(ctx, spans)
	if err != nil {
		e.failed.Add(float64(len(spans)))
		e.log.Warn("trace export failed; spans lost", zap.String("endpoint", e.endpoint), zap.Int("spans", len(spans)),
			zap.Duration("elapsed", time.Since(t0)), zap.Error(err))
		return err
	}
	e.exported.Add(float64(len(spans)))
	return nil
}

func (e *countingExporter) Shutdown(ctx context.Context) error { return e.next.Shutdown(ctx) }
