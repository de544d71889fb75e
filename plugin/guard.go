package plugin

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
)

// The guard protocol, spoken with imagegate-runc on guard.socket, one
// exchange per connection:
//
//	request:  "admit <container-id>\n"
//	answer:   "allow\n" | "deny <reason>\n"
//
// imagegate-runc takes anything else, or no answer, for a refusal.
const (
	// guardBudget bounds a decision asked by imagegate-runc, which waits
	// 3 s: the answer must arrive before it gives up, or the user reads
	// "no answer" instead of "verification in progress, retry".
	guardBudget = 2 * time.Second
	// guardConnTimeout bounds one connection, request to answer.
	guardConnTimeout = guardBudget + time.Second
	// maxGuardRequest bounds the request line.
	maxGuardRequest = 512
	// maxGuardReason bounds the reason sent back.
	maxGuardReason = 4096
)

// listenGuard listens on path, created 0600 in a 0700 directory: whoever
// can ask can learn the policy's verdicts on the node's containers. A
// socket left by a previous run is replaced; any other file is not.
func listenGuard(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, err
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode().Type() != fs.ModeSocket {
			return nil, fmt.Errorf("%s exists and is not a socket", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, err
		}
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, err
	}
	return ln, nil
}

// serveGuard answers imagegate-runc until ctx ends, then closes ln, which
// removes the socket: a stopped imagegate leaves no socket that accepts
// and never answers.
func (p *Plugin) serveGuard(ctx context.Context, ln net.Listener) {
	var conns sync.WaitGroup
	defer conns.Wait()
	go func() {
		<-ctx.Done()
		ln.Close()
	}()
	delay := 5 * time.Millisecond
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors, most likely: wait, as net/http does.
			p.log.Warn("guard socket: accept failed", zap.Error(err), zap.Duration("retryIn", delay))
			time.Sleep(delay)
			delay = min(2*delay, time.Second)
			continue
		}
		delay = 5 * time.Millisecond
		conns.Add(1)
		go func() {
			defer conns.Done()
			p.answerGuard(ctx, c)
		}()
	}
}

func (p *Plugin) answerGuard(ctx context.Context, c net.Conn) {
	defer c.Close()
	if err := c.SetDeadline(time.Now().Add(guardConnTimeout)); err != nil {
		return
	}
	line, err := bufio.NewReaderSize(c, maxGuardRequest).ReadSlice('\n')
	if err != nil {
		fmt.Fprintf(c, "deny bad request: %v\n", err)
		return
	}
	id, ok := strings.CutPrefix(strings.TrimSuffix(string(line), "\n"), "admit ")
	if !ok {
		fmt.Fprintf(c, "deny bad request %q\n", line)
		return
	}
	if err := p.decideAdmitted(ctx, id); err != nil {
		fmt.Fprintf(c, "deny %s\n", guardReason(err.Error()))
		return
	}
	fmt.Fprint(c, "allow\n")
}

// guardReason fits a denial on the protocol's one line. imagegate-runc
// says "imagegate: container ID was not admitted: " before it, so the
// prefix and the ID are not repeated.
func guardReason(msg string) string {
	msg = strings.TrimPrefix(msg, "imagegate: ")
	msg = strings.Map(func(r rune) rune {
		if r == '\n' || r == '\r' {
			return ' '
		}
		return r
	}, msg)
	if len(msg) > maxGuardReason {
		msg = msg[:maxGuardReason] + "…"
	}
	return msg
}
