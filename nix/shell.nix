# SPDX-License-Identifier: Apache-2.0
# Development shell: everything scripts/check and scripts/demo use, plus the RDMA tools and qemu.
# From ../flake.nix (`nix develop`), or standalone: `nix-shell nix/shell.nix`.
{ pkgs ? import <nixpkgs> { }
, perftest ? pkgs.callPackage ./perftest.nix { }
}:

let
  llvm = pkgs.llvmPackages_14;
in
pkgs.mkShell {
  # mkShell's stdenv brings gcc (g++); clang 14 is the second compiler of the check matrix.
  packages = with pkgs; [
    meson
    ninja
    pkg-config
    python3
    git
    llvm.clang
    llvm.clang-tools # clang-format and clang-tidy 14, matching .clang-format/.clang-tidy
    catch2 # v2 (2.13), as on Debian 12
    liburing
    fmt
    nlohmann_json
    cli11
    gbenchmark
    rdma-core
    perftest
    qperf
    qemu
    util-linux # setarch, used to run TSan tests without ASLR
  ];

  shellHook = ''
    # The clang wrapper's setup hook exports CC=clang; keep gcc the default like on Debian.
    export CC=gcc CXX=g++
    # Packages come from Nix here, not apt (scripts/deps).
    export TBV_SKIP_DEPS=1
  '';
}
