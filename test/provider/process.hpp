// SPDX-License-Identifier: Apache-2.0
// Running unmodified verbs programs for the provider suite: a child process with extra
// environment (LD_PRELOAD of the interposer, TBV_EMU), its output in a file, a time limit.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <string>
#include <vector>

namespace tbv::test {

struct ProcResult {
    int status = -1;  ///< exit code; -1 if killed (time limit) or it did not exit normally
    std::string out;  ///< stdout and stderr
};

class Proc {
public:
    /// Starts argv[0] (looked up in PATH) with the current environment plus `env` ("K=V").
    Proc(const std::vector<std::string>& argv, const std::vector<std::string>& env);
    ~Proc();  ///< kills it if still running
    Proc(const Proc&) = delete;
    Proc& operator=(const Proc&) = delete;

    bool started() const noexcept { return pid_ > 0; }
    /// Waits up to `limit` for it to exit (then kills it) and returns its status and output.
    ProcResult finish(std::chrono::milliseconds limit);

private:
    pid_t pid_ = -1;
    std::string log_;
};

/// Whether `prog` is found in PATH.
bool have_program(const std::string& prog);
/// The interposer to preload (TBV_PRELOAD, set by meson).
std::string preload_path();
/// A name unique to this process and call, for cables and the like.
std::string unique_name(const std::string& prefix);
/// A TCP port on 127.0.0.1 that was free a moment ago.
int free_tcp_port();

/// Removes a shared-memory cable's file when a test is done with it (a process that was killed,
/// or two ends that closed at the same moment, can leave it behind).
class CableFile {
public:
    explicit CableFile(std::string name) : name_(std::move(name)) {}
    ~CableFile();
    CableFile(const CableFile&) = delete;
    CableFile& operator=(const CableFile&) = delete;
    const std::string& name() const noexcept { return name_; }

private:
    std::string name_;
};

}  // namespace tbv::test
