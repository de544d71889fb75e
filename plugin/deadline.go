package plugin

import (
	"context"
	"sync"
	"time"
)

// lazyDeadline is its parent bounded by a deadline, whose timer is set only
// when something waits on Done or asks Err. A cached verdict is answered
// without either, so a cache hit costs no timer; context.WithDeadline
// would cost four allocations on every create.
type lazyDeadline struct {
	parent   context.Context
	deadline time.Time

	once   sync.Once
	ctx    context.Context
	cancel context.CancelFunc
}

func newLazyDeadline(parent context.Context, deadline time.Time) *lazyDeadline {
	return &lazyDeadline{parent: parent, deadline: deadline}
}

func (l *lazyDeadline) start() context.Context {
	l.once.Do(func() { l.ctx, l.cancel = context.WithDeadline(l.parent, l.deadline) })
	if l.ctx == nil {
		return stopped
	}
	return l.ctx
}

// stopped is what a lazyDeadline is once stopped without having started.
var stopped = func() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}()

func (l *lazyDeadline) Deadline() (time.Time, bool) {
	if d, ok := l.parent.Deadline(); ok && d.Before(l.deadline) {
		return d, true
	}
	return l.deadline, true
}

func (l *lazyDeadline) Done() <-chan struct{} { return l.start().Done() }
func (l *lazyDeadline) Err() error            { return l.start().Err() }
func (l *lazyDeadline) Value(key any) any     { return l.parent.Value(key) }

// stop releases the timer, if one was set.
func (l *lazyDeadline) stop() {
	// Settles the race with a late start: after Do, no timer starts again.
	l.once.Do(func() {})
	if l.cancel != nil {
		l.cancel()
	}
}
