package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/signal"
	"syscall"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/imagegate/imagegate/plugin"
)

func runDaemon(ctx context.Context, args []string, stderr io.Writer) int {
	flags := flag.NewFlagSet("run", flag.ContinueOnError)
	flags.SetOutput(stderr)
	path := flags.String("config", defaultConfig, "daemon config file")
	if err := flags.Parse(args); err != nil {
		return exitError
	}
	if flags.NArg() > 0 {
		fmt.Fprintf(stderr, "imagegate run: unexpected argument %q\n", flags.Arg(0))
		return exitError
	}
	cfg, err := loadConfig(flags, *path)
	if err != nil {
		fmt.Fprintf(stderr, "imagegate run: %v\n", err)
		return exitError
	}
	log, err := newLogger(cfg.LogLevel, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "imagegate run: %v\n", err)
		return exitError
	}
	defer log.Sync() //nolint:errcheck // stderr may not sync; nothing to do about it

	p, err := plugin.New(cfg, log)
	if err != nil {
		log.Error("cannot start", zap.Error(err))
		return exitError
	}
	defer p.Close()

	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go func() {
		for range hup {
			// Reload logs what it refused and why.
			_ = p.Reload()
		}
	}()

	log.Info("starting", zap.String("version", version), zap.String("config", *path),
		zap.String("policyDir", cfg.PolicyDir), zap.String("nriSocket", cfg.NRI.Socket))
	if err := p.Run(ctx); err != nil {
		log.Error("stopped", zap.Error(err))
		return exitError
	}
	return exitOK
}

// loadConfig reads the daemon config. The default file may be absent
// (every default applies); a file named with --config must exist.
func loadConfig(flags *flag.FlagSet, path string) (plugin.Config, error) {
	cfg, err := plugin.LoadConfig(path)
	if errors.Is(err, fs.ErrNotExist) {
		explicit := false
		flags.Visit(func(f *flag.Flag) { explicit = explicit || f.Name == "config" })
		if !explicit {
			return plugin.DefaultConfig(), nil
		}
	}
	return cfg, err
}

// newLogger logs JSON to stderr, which systemd hands to journald.
func newLogger(level string, stderr io.Writer) (*zap.Logger, error) {
	lvl, err := zapcore.ParseLevel(level)
	if err != nil {
		return nil, err
	}
	enc := zap.NewProductionEncoderConfig()
	enc.TimeKey = "time"
	enc.EncodeTime = zapcore.RFC3339NanoTimeEncoder
	core := zapcore.NewCore(zapcore.NewJSONEncoder(enc), zapcore.Lock(zapcore.AddSync(stderr)), lvl)
	return zap.New(core, zap.ErrorOutput(zapcore.Lock(zapcore.AddSync(stderr)))), nil
}
