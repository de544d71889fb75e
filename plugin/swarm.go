package plugin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/encoding/protowire"
)

// A swarm worker cannot ask the managers for a task (the Engine API answers
// 503), but dockerd keeps every task assigned to the node in a bbolt file
// under its data root. That file is swarmkit's internal format, not an
// API: DESIGN.md and the README say which Docker versions it was tested
// with.
const (
	// taskStorePath is the store under dockerd's data root.
	taskStorePath = "swarm/worker/tasks.db"
	// taskStoreAttempts bounds the copies read when one is inconsistent:
	// bbolt reuses freed pages, so a copy taken during a write can mix two
	// versions of the tree.
	taskStoreAttempts = 3
	taskStoreRetry    = 2 * time.Millisecond
)

// swarmkit's protobuf field numbers on the path from api.Task to the image:
// Task.spec (3) → TaskSpec.container (1) → ContainerSpec.image (1).
const (
	fieldTaskSpec      protowire.Number = 3
	fieldSpecContainer protowire.Number = 1
	fieldContainerImg  protowire.Number = 1
)

var errTaskNotFound = errors.New("not in the worker's task store")

// workerTaskImage returns the image of task id as the worker's task store
// holds it. dockerd holds the store under an exclusive lock, so it reads a
// private copy, again when a copy turns out inconsistent.
func workerTaskImage(ctx context.Context, dataRoot, id string) (string, error) {
	src := filepath.Join(dataRoot, taskStorePath)
	var err error
	for attempt := range taskStoreAttempts {
		if attempt > 0 {
			select {
			case <-ctx.Done():
				return "", fmt.Errorf("reading the worker's task store %s: %w (after: %v)", src, ctx.Err(), err)
			case <-time.After(taskStoreRetry):
			}
		}
		var image string
		image, err = readTaskCopy(src, id)
		if err == nil {
			return image, nil
		}
		if errors.Is(err, fs.ErrNotExist) {
			return "", fmt.Errorf("no worker task store at %s: is this node part of a swarm, and is docker.address the engine whose data root that is?", src)
		}
	}
	if errors.Is(err, errTaskNotFound) {
		return "", fmt.Errorf("task %s is %w %s", id, errTaskNotFound, src)
	}
	return "", fmt.Errorf("reading the worker's task store %s: %w", src, err)
}

// readTaskCopy copies src and reads task id from the copy.
func readTaskCopy(src, id string) (image string, err error) {
	in, err := os.Open(src)
	if err != nil {
		return "", err
	}
	defer in.Close()
	tmp, err := os.CreateTemp("", "imagegate-tasks-*.db")
	if err != nil {
		return "", fmt.Errorf("cannot copy it: %w", err)
	}
	defer os.Remove(tmp.Name())
	_, err = io.Copy(tmp, in)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", fmt.Errorf("cannot copy it: %w", err)
	}

	// An inconsistent copy can send bbolt to a page that is not what it
	// expects, and bbolt panics on that instead of returning an error.
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("inconsistent copy: %v", r)
		}
	}()
	db, err := bolt.Open(tmp.Name(), 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		return "", err
	}
	defer db.Close()
	var data []byte
	err = db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte("v1"))
		if b != nil {
			b = b.Bucket([]byte("tasks"))
		}
		if b != nil {
			b = b.Bucket([]byte(id))
		}
		if b == nil {
			return errTaskNotFound
		}
		// The value lives in the mapping, which closes with the database.
		data = append([]byte(nil), b.Get([]byte("data"))...)
		return nil
	})
	if err != nil {
		return "", err
	}
	if data == nil {
		return "", errTaskNotFound
	}
	return taskImage(data)
}

// taskImage decodes the image of a protobuf swarmkit api.Task, without
// importing swarmkit for one string.
func taskImage(task []byte) (string, error) {
	b := task
	for _, f := range []protowire.Number{fieldTaskSpec, fieldSpecContainer, fieldContainerImg} {
		v, ok, err := protoBytes(b, f)
		if err != nil {
			return "", fmt.Errorf("undecodable task record: %w", err)
		}
		if !ok {
			return "", errors.New("the task record names no container image")
		}
		b = v
	}
	return string(b), nil
}

// protoBytes returns the last length-delimited field num of msg. Merging
// repeated occurrences of a message field does not matter here: swarmkit
// writes each once.
func protoBytes(msg []byte, num protowire.Number) ([]byte, bool, error) {
	var out []byte
	found := false
	for len(msg) > 0 {
		n, typ, l := protowire.ConsumeTag(msg)
		if l < 0 {
			return nil, false, protowire.ParseError(l)
		}
		msg = msg[l:]
		if n == num && typ == protowire.BytesType {
			v, l := protowire.ConsumeBytes(msg)
			if l < 0 {
				return nil, false, protowire.ParseError(l)
			}
			out, found = v, true
			msg = msg[l:]
			continue
		}
		l = protowire.ConsumeFieldValue(n, typ, msg)
		if l < 0 {
			return nil, false, protowire.ParseError(l)
		}
		msg = msg[l:]
	}
	return out, found, nil
}
