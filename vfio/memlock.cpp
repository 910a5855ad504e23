// SPDX-License-Identifier: Apache-2.0
// The error a user sees when pinning DMA memory hits RLIMIT_MEMLOCK: both type1 and iommufd
// account pinned pages against it (unless the caller has CAP_IPC_LOCK) and return ENOMEM.
#include <sys/resource.h>

#include <cerrno>
#include <string>

#include "vfio/dma_backend.hpp"
#include "vfio/error.hpp"

namespace tbv::vfio {

Failure memlock_failure(std::size_t len, std::size_t already_mapped) {
    rlimit lim{};
    ::getrlimit(RLIMIT_MEMLOCK, &lim);
    std::string limit = lim.rlim_cur == RLIM_INFINITY ? std::string("unlimited")
                                                      : std::to_string(lim.rlim_cur) + " bytes";
    return fail_detail(
        ENOMEM,
        "pinning " + std::to_string(len) + " bytes for DMA failed (" +
            std::to_string(already_mapped) +
            " bytes already mapped by this device); RLIMIT_MEMLOCK is " + limit +
            ". Raise the locked-memory limit: `ulimit -l unlimited` in the shell, 'memlock' in "
            "/etc/security/limits.conf, LimitMEMLOCK=infinity for a systemd service, or "
            "--ulimit memlock=-1 for a container (CAP_IPC_LOCK also lifts the limit)");
}

}  // namespace tbv::vfio
