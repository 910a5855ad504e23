# SPDX-License-Identifier: Apache-2.0
# perftest (ib_write_bw, ib_read_lat, ...) is not packaged in nixpkgs. Pinned to a release tag so
# benchmark numbers stay comparable. It links the rdma-core it is given; the provider issue pins
# rdma-core to the private ABI (PABI) the provider is built for (docs style.md B8).
{ lib
, stdenv
, fetchFromGitHub
, autoreconfHook
, pkg-config
, rdma-core
, pciutils
}:

stdenv.mkDerivation (finalAttrs: {
  pname = "perftest";
  version = "26.04.17";

  src = fetchFromGitHub {
    owner = "linux-rdma";
    repo = "perftest";
    rev = finalAttrs.version;
    hash = "sha256-oNvzQubmslZ4JUNww/wvWd54JDsDLamCDlorHWlNtaY=";
  };

  nativeBuildInputs = [ autoreconfHook pkg-config ];
  buildInputs = [ rdma-core pciutils ];
  enableParallelBuilding = true;

  meta = {
    description = "RDMA bandwidth and latency benchmarks (ib_write_bw, ib_read_lat, ...)";
    homepage = "https://github.com/linux-rdma/perftest";
    license = with lib.licenses; [ bsd2 gpl2Only ];
    platforms = lib.platforms.linux;
  };
})
