# make cosign3-test: interoperability with the cosign v3 CLI. Signs and
# attests a pushed image with a key, offline (an empty signing config and
# a trusted root on the command line), and verifies it with imagegate,
# against a registry with the referrers API and one without
# (verify.TestCosignV3Interop, skipped unless IMAGEGATE_COSIGN3 is set).

.PHONY: cosign3-test

cosign3-test: $(COSIGN3)
	IMAGEGATE_COSIGN3=$(COSIGN3) $(GO) test -count=1 -run '^TestCosignV3Interop$$' -v ./verify/

$(COSIGN3):
	@mkdir -p $(TOOLS)/cosign3.tmp
	GOBIN=$(TOOLS)/cosign3.tmp CGO_ENABLED=0 $(GO) install github.com/sigstore/cosign/v3/cmd/cosign@$(COSIGN3_VERSION)
	mv $(TOOLS)/cosign3.tmp/cosign $@
	rmdir $(TOOLS)/cosign3.tmp
