// SPDX-License-Identifier: Apache-2.0
#include "process.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <thread>

extern char** environ;

namespace tbv::test {

Proc::Proc(const std::vector<std::string>& argv, const std::vector<std::string>& env) {
    log_ = unique_name("/tmp/tbv-provider-test-") + ".log";
    std::vector<std::string> envs;
    for (char** e = environ; *e != nullptr; ++e) {
        const std::string kv = *e;
        bool overridden = false;
        for (const auto& x : env) {
            if (kv.substr(0, kv.find('=') + 1) == x.substr(0, x.find('=') + 1)) {
                overridden = true;
            }
        }
        if (!overridden) {
            envs.push_back(kv);
        }
    }
    envs.insert(envs.end(), env.begin(), env.end());
    std::vector<char*> av;
    for (const auto& a : argv) {
        av.push_back(const_cast<char*>(a.c_str()));
    }
    av.push_back(nullptr);
    std::vector<char*> ev;
    for (const auto& e : envs) {
        ev.push_back(const_cast<char*>(e.c_str()));
    }
    ev.push_back(nullptr);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, log_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    pid_t pid = -1;
    if (::posix_spawnp(&pid, av[0], &fa, nullptr, av.data(), ev.data()) == 0) {
        pid_ = pid;
    }
    posix_spawn_file_actions_destroy(&fa);
}

Proc::~Proc() {
    if (pid_ > 0) {
        ::kill(pid_, SIGKILL);
        int st = 0;
        ::waitpid(pid_, &st, 0);
    }
    ::unlink(log_.c_str());
}

ProcResult Proc::finish(std::chrono::milliseconds limit) {
    ProcResult r;
    if (pid_ <= 0) {
        r.out = "(could not start)";
        return r;
    }
    const auto end = std::chrono::steady_clock::now() + limit;
    int st = 0;
    bool exited = false;
    while (std::chrono::steady_clock::now() < end) {
        const pid_t w = ::waitpid(pid_, &st, WNOHANG);
        if (w == pid_) {
            exited = true;
            break;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    if (!exited) {
        ::kill(pid_, SIGKILL);
        ::waitpid(pid_, &st, 0);
    }
    pid_ = -1;
    r.status = exited && WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    std::ifstream in(log_);
    std::stringstream ss;
    ss << in.rdbuf();
    r.out = ss.str();
    if (!exited) {
        r.out += "\n(killed: still running after " + std::to_string(limit.count()) + " ms)";
    } else if (WIFSIGNALED(st)) {
        r.out += "\n(killed by signal " + std::to_string(WTERMSIG(st)) + ")";
    }
    return r;
}

bool have_program(const std::string& prog) {
    const char* path = std::getenv("PATH");
    std::stringstream ss(path != nullptr ? path : "/usr/bin:/bin");
    std::string dir;
    while (std::getline(ss, dir, ':')) {
        if (::access((dir + "/" + prog).c_str(), X_OK) == 0) {
            return true;
        }
    }
    return false;
}

std::string preload_path() {
    const char* p = std::getenv("TBV_PRELOAD");
    return p != nullptr ? p : "";
}

std::string unique_name(const std::string& prefix) {
    static std::atomic<unsigned> n{0};
    return prefix + std::to_string(::getpid()) + "-" + std::to_string(n.fetch_add(1));
}

int free_tcp_port() {
    const int s = ::socket(AF_INET, SOCK_STREAM, 0);
    if (s < 0) {
        return 18515;
    }
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = 0;
    socklen_t len = sizeof a;
    int port = 18515;
    if (::bind(s, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 &&
        ::getsockname(s, reinterpret_cast<sockaddr*>(&a), &len) == 0) {
        port = ntohs(a.sin_port);
    }
    ::close(s);
    return port;
}

CableFile::~CableFile() {
    ::unlink(("/dev/shm/tbv-cable-" + name_).c_str());
}

}  // namespace tbv::test
