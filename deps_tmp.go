package main

import (
	_ "github.com/containerd/nri/pkg/adaptation"
	_ "github.com/containerd/nri/pkg/api"
	_ "github.com/containerd/nri/pkg/stub"
	_ "github.com/google/go-containerregistry/pkg/authn"
	_ "github.com/google/go-containerregistry/pkg/registry"
	_ "github.com/google/go-containerregistry/pkg/v1/random"
	_ "github.com/google/go-containerregistry/pkg/v1/remote"
	_ "github.com/hashicorp/golang-lru/v2/expirable"
	_ "github.com/prometheus/client_golang/prometheus"
	_ "github.com/prometheus/client_golang/prometheus/promhttp"
	_ "github.com/sigstore/cosign/v2/pkg/cosign/attestation"
	_ "github.com/sigstore/cosign/v2/pkg/oci/mutate"
	_ "github.com/sigstore/cosign/v2/pkg/oci/remote"
	_ "github.com/sigstore/cosign/v2/pkg/oci/static"
	_ "github.com/sigstore/sigstore/pkg/cryptoutils"
	_ "github.com/sigstore/sigstore/pkg/signature"
	_ "github.com/sigstore/sigstore/pkg/signature/dsse"
	_ "github.com/sigstore/sigstore/pkg/signature/payload"
	_ "github.com/secure-systems-lab/go-securesystemslib/dsse"
	_ "go.uber.org/zap"
	_ "gopkg.in/yaml.v3"
	_ "golang.org/x/sync/singleflight"
	_ "github.com/containerd/containerd/v2/client"
)

func main() {}
