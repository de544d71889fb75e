package plugin

import (
	"context"
	"fmt"
	"strings"

	eventtypes "github.com/containerd/containerd/api/events"
	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/typeurl/v2"
	"github.com/distribution/reference"
)

// ImageStore resolves an image reference through the runtime's local image
// store to the digest of the image the runtime holds under it: the digest
// that is about to run, which the registry may since have moved the tag
// away from.
type ImageStore interface {
	Digest(ctx context.Context, ref string) (string, error)
}

// ImagePulls reports images as the runtime stores them, so that their
// verdicts are ready before the first create.
type ImagePulls interface {
	// WatchPulls calls pulled for every image created or updated in the
	// store until ctx ends or the watch fails.
	WatchPulls(ctx context.Context, pulled func(ref, digest string)) error
}

// k8sNamespace is the containerd namespace of the CRI plugin.
const k8sNamespace = "k8s.io"

// containerdImages reads containerd's image store and event stream.
type containerdImages struct {
	client *containerd.Client
}

// newContainerdImages returns a client for address; it connects lazily, so
// a containerd that is not up yet is not an error here.
func newContainerdImages(address string) (*containerdImages, error) {
	c, err := containerd.New(address, containerd.WithDefaultNamespace(k8sNamespace))
	if err != nil {
		return nil, fmt.Errorf("containerd at %s: %w", address, err)
	}
	return &containerdImages{client: c}, nil
}

func (c *containerdImages) Close() error { return c.client.Close() }

func (c *containerdImages) Digest(ctx context.Context, ref string) (string, error) {
	// CRI stores images under their normalized names (docker.io/library/
	// nginx:latest), while the annotation holds what the workload wrote.
	if named, err := reference.ParseDockerRef(ref); err == nil {
		ref = named.String()
	}
	img, err := c.client.ImageService().Get(ctx, ref)
	if err != nil {
		return "", fmt.Errorf("containerd image store: %w", err)
	}
	return img.Target.Digest.String(), nil
}

func (c *containerdImages) WatchPulls(ctx context.Context, pulled func(ref, digest string)) error {
	envs, errs := c.client.Subscribe(ctx,
		`namespace=="`+k8sNamespace+`",topic=="/images/create"`,
		`namespace=="`+k8sNamespace+`",topic=="/images/update"`)
	for {
		select {
		case env := <-envs:
			ev, err := typeurl.UnmarshalAny(env.Event)
			if err != nil {
				continue
			}
			var ref string
			switch e := ev.(type) {
			case *eventtypes.ImageCreate:
				ref = e.Name
			case *eventtypes.ImageUpdate:
				ref = e.Name
			}
			// CRI also names every image by its config digest (sha256:…),
			// which says nothing about the repository rules match on.
			if ref == "" || strings.HasPrefix(ref, "sha256:") {
				continue
			}
			d, err := c.Digest(ctx, ref)
			if err != nil {
				continue
			}
			pulled(ref, d)
		case err := <-errs:
			if err == nil {
				err = ctx.Err()
			}
			return err
		}
	}
}
