# SPDX-License-Identifier: Apache-2.0
# Reproducible toolchain for tbverbs (docs style.md "Habits").
#
#   nix develop            dev shell: meson, ninja, g++, clang 14 (+ clang-format/clang-tidy 14),
#                          Catch2 v2, liburing, fmt, nlohmann_json, CLI11, Google Benchmark,
#                          rdma-core, perftest, qperf, qemu; then scripts/check as usual
#   nix build              the library, tools and benchmarks, built and unit-tested with meson
#   nix flake check        the same build as a check
{
  description = "tbverbs: RDMA verbs over USB4/Thunderbolt from userspace";

  # nixos-25.05 is the last release with LLVM 14 (llvmPackages_14 left nixpkgs in August 2025).
  # Debian 12's clang, clang-format and clang-tidy are 14, and clang-format's output changes
  # between major versions, so the shell pins the same major as the Debian machines.
  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-25.05";

  outputs = { self, nixpkgs }:
    let
      systems = [ "x86_64-linux" "aarch64-linux" ];
      forAllSystems = f: nixpkgs.lib.genAttrs systems
        (system: f system nixpkgs.legacyPackages.${system});
    in
    {
      packages = forAllSystems (system: pkgs: rec {
        tbverbs = pkgs.callPackage ./nix/package.nix { };
        perftest = pkgs.callPackage ./nix/perftest.nix { };
        default = tbverbs;
      });

      devShells = forAllSystems (system: pkgs: {
        default = import ./nix/shell.nix {
          inherit pkgs;
          inherit (self.packages.${system}) perftest;
        };
      });

      checks = forAllSystems (system: pkgs: {
        build = self.packages.${system}.tbverbs;
      });
    };
}
