# SPDX-License-Identifier: Apache-2.0
# tbverbs built with meson, with the unit and emulator suites run as the check phase.
# Used by ../flake.nix; also works as `nix-build -E '(import <nixpkgs> {}).callPackage ./nix/package.nix {}'`.
{ lib
, stdenv
, meson
, ninja
, pkg-config
, python3
, liburing
, fmt
, nlohmann_json
, cli11
, gbenchmark
, catch2
, doCheck ? true
}:

stdenv.mkDerivation {
  pname = "tbverbs";
  version = "0.1.0";

  # The repository without VCS data, editor leftovers and local build trees.
  src = lib.cleanSourceWith {
    src = lib.cleanSource ./..;
    filter = path: type: path != toString ../build;
  };

  strictDeps = true;
  nativeBuildInputs = [ meson ninja pkg-config python3 ];
  buildInputs = [ liburing fmt nlohmann_json cli11 gbenchmark ];
  checkInputs = [ catch2 ];

  mesonBuildType = "release";
  mesonFlags = [
    (lib.mesonBool "tests" doCheck)
    (lib.mesonBool "bench" true)
  ];

  inherit doCheck;
  # Hardware and fuzz suites need a device or a fuzzer; the sandbox has neither.
  mesonCheckFlags = [ "--suite" "unit" "--suite" "emu" ];

  # Until meson.build marks targets for installation, ship the benchmark and tool binaries from
  # the build tree so the package is usable and $out always exists.
  postInstall = ''
    mkdir -p $out/bin
    for f in bench/tbv-* src/tools/tbv; do
      if [ -f "$f" ] && [ -x "$f" ] && [ ! -e "$out/bin/$(basename "$f")" ]; then
        install -m755 "$f" "$out/bin/"
      fi
    done
  '';

  meta = {
    description = "RDMA verbs over USB4/Thunderbolt host-to-host links from userspace (VFIO)";
    license = lib.licenses.asl20;
    platforms = lib.platforms.linux;
  };
}
