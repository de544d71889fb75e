package e2e

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// CRI is the part of a kubelet that the end-to-end test plays: it speaks
// the CRI gRPC API to containerd, so every create takes the same path
// through containerd's CRI plugin and NRI as on a Kubernetes node.
type CRI struct {
	conn    *grpc.ClientConn
	runtime runtimeapi.RuntimeServiceClient
	images  runtimeapi.ImageServiceClient
}

// DialCRI connects to the CRI service on containerd's socket. The
// connection is made lazily, so a containerd that restarts is reached
// again by the next call.
func DialCRI(socket string) (*CRI, error) {
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, err
	}
	return &CRI{
		conn:    conn,
		runtime: runtimeapi.NewRuntimeServiceClient(conn),
		images:  runtimeapi.NewImageServiceClient(conn),
	}, nil
}

// Close closes the connection.
func (c *CRI) Close() error { return c.conn.Close() }

// Ready returns nil once the runtime reports itself ready: the kubelet
// waits for the same condition before it runs pods.
func (c *CRI) Ready(ctx context.Context) error {
	st, err := c.runtime.Status(ctx, &runtimeapi.StatusRequest{})
	if err != nil {
		return err
	}
	for _, cond := range st.GetStatus().GetConditions() {
		if cond.GetType() == runtimeapi.RuntimeReady {
			if cond.GetStatus() {
				return nil
			}
			return fmt.Errorf("runtime not ready: %s: %s", cond.GetReason(), cond.GetMessage())
		}
	}
	return errors.New("runtime reports no RuntimeReady condition")
}

// Pod is a running pod sandbox and the config it was created with, which
// every create in it must repeat.
type Pod struct {
	ID     string
	Config *runtimeapi.PodSandboxConfig
}

// RunPod runs a pod sandbox in the host network namespace, which needs no
// CNI. A host-network pod gets no hostname: the runtime refuses one.
func (c *CRI) RunPod(ctx context.Context, name string) (*Pod, error) {
	cfg := &runtimeapi.PodSandboxConfig{
		Metadata: &runtimeapi.PodSandboxMetadata{Name: name, Uid: name + "-uid", Namespace: "e2e"},
		Linux: &runtimeapi.LinuxPodSandboxConfig{
			SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{
				NamespaceOptions: &runtimeapi.NamespaceOption{Network: runtimeapi.NamespaceMode_NODE},
			},
		},
	}
	resp, err := c.runtime.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: cfg})
	if err != nil {
		return nil, err
	}
	return &Pod{ID: resp.GetPodSandboxId(), Config: cfg}, nil
}

// Pull pulls image and returns the runtime's reference to what it pulled
// (the image ID), which is what a kubelet puts in the container config.
func (c *CRI) Pull(ctx context.Context, image string) (string, error) {
	resp, err := c.images.PullImage(ctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: image}})
	if err != nil {
		return "", err
	}
	return resp.GetImageRef(), nil
}

// CreateContainer creates a container as a kubelet does: the image by the
// reference Pull returned, and the image the workload named beside it.
func (c *CRI) CreateContainer(ctx context.Context, pod *Pod, name, imageRef, userImage string) (string, error) {
	resp, err := c.runtime.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{
		PodSandboxId: pod.ID,
		Config: &runtimeapi.ContainerConfig{
			Metadata: &runtimeapi.ContainerMetadata{Name: name},
			Image:    &runtimeapi.ImageSpec{Image: imageRef, UserSpecifiedImage: userImage},
			Linux:    &runtimeapi.LinuxContainerConfig{},
		},
		SandboxConfig: pod.Config,
	})
	if err != nil {
		return "", err
	}
	return resp.GetContainerId(), nil
}

// StartContainer starts a created container.
func (c *CRI) StartContainer(ctx context.Context, id string) error {
	_, err := c.runtime.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: id})
	return err
}

// ContainerState returns the state of container id.
func (c *CRI) ContainerState(ctx context.Context, id string) (runtimeapi.ContainerState, error) {
	resp, err := c.runtime.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: id})
	if err != nil {
		return 0, err
	}
	return resp.GetStatus().GetState(), nil
}

// RemoveAllPods stops and removes every pod sandbox with its containers,
// so that no shim or mount outlives the test.
func (c *CRI) RemoveAllPods(ctx context.Context) error {
	resp, err := c.runtime.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{})
	if err != nil {
		return err
	}
	var errs []error
	for _, p := range resp.GetItems() {
		if _, err := c.runtime.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: p.GetId()}); err != nil {
			errs = append(errs, err)
			continue
		}
		if _, err := c.runtime.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: p.GetId()}); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
