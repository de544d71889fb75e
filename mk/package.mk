# Packages: `make package` builds dist/imagegate_<version>_<arch>.deb and
# .rpm with nfpm; `make package-test` builds them, installs the .deb on
# THIS machine (root, a throwaway VM or CI), checks it and purges it.

NFPM_VERSION := v2.45.2
NFPM         := $(TOOLS)/nfpm-$(NFPM_VERSION)
PKG_ARCH     ?= $(shell $(GO) env GOARCH)
# deb and rpm versions must start with a digit and rpm's may hold no '-';
# an untagged commit sorts below every release, even when its hash
# starts with a digit:
# v1.2.3-4-gabc becomes 1.2.3+4+gabc (sorting after 1.2.3), an untagged
# abc123-dirty becomes 0.0.0+git.abc123+dirty.
ifndef PKG_VERSION
PKG_VERSION := $(shell echo '$(VERSION)' | sed -e 's/^v//' -e '/^[0-9][0-9]*\./!s/^/0.0.0+git./' -e 's/-/+/g')
endif
PKG_DEB      := dist/imagegate_$(PKG_VERSION)_$(PKG_ARCH).deb
PKG_RPM      := dist/imagegate_$(PKG_VERSION)_$(PKG_ARCH).rpm

.PHONY: package package-test

package: build $(NFPM)
	@mkdir -p dist
	rm -f $(PKG_DEB) $(PKG_RPM)
	VERSION='$(PKG_VERSION)' ARCH='$(PKG_ARCH)' $(NFPM) package --config packaging/nfpm.yaml --packager deb --target $(PKG_DEB)
	VERSION='$(PKG_VERSION)' ARCH='$(PKG_ARCH)' $(NFPM) package --config packaging/nfpm.yaml --packager rpm --target $(PKG_RPM)

## package-test: installs and purges the .deb on this machine; needs root
## and dpkg, and installs rpm and systemd-analyze when they are missing.
package-test: package
	@command -v rpm >/dev/null && command -v systemd-analyze >/dev/null || \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rpm systemd; }
	IMAGEGATE_PACKAGE_TEST=1 IMAGEGATE_DEB=$(CURDIR)/$(PKG_DEB) IMAGEGATE_RPM=$(CURDIR)/$(PKG_RPM) \
		$(GO) test -count=1 -v ./packaging/

$(NFPM):
	@mkdir -p $(TOOLS)
	GOBIN=$(TOOLS) CGO_ENABLED=0 $(GO) install github.com/goreleaser/nfpm/v2/cmd/nfpm@$(NFPM_VERSION)
	mv $(TOOLS)/nfpm $@
