// SPDX-License-Identifier: Apache-2.0
// Region info, BAR mapping and config-space access through the VFIO device fd (regions.hpp).
#include "vfio/regions.hpp"

#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "vfio/error.hpp"
#include "vfio/uapi.hpp"

namespace tbv::vfio {

Result<RegionInfo> region_info(int device_fd, std::uint32_t index) {
    std::vector<std::uint64_t> buf(sizeof(vfio_region_info) / 8 + 1, 0);
    auto* ri = reinterpret_cast<vfio_region_info*>(buf.data());
    ri->argsz = sizeof(vfio_region_info);
    ri->index = index;
    if (::ioctl(device_fd, VFIO_DEVICE_GET_REGION_INFO, ri) != 0) {
        return fail_detail(errno, "VFIO_DEVICE_GET_REGION_INFO " + std::to_string(index));
    }
    if (ri->argsz > sizeof(vfio_region_info)) {  // capabilities follow: ask again with room
        const std::uint32_t need = ri->argsz;
        buf.assign(need / 8 + 1, 0);
        ri = reinterpret_cast<vfio_region_info*>(buf.data());
        ri->argsz = need;
        ri->index = index;
        if (::ioctl(device_fd, VFIO_DEVICE_GET_REGION_INFO, ri) != 0) {
            return fail_detail(errno, "VFIO_DEVICE_GET_REGION_INFO " + std::to_string(index));
        }
    }
    RegionInfo out;
    out.index = index;
    out.flags = ri->flags;
    out.size = ri->size;
    out.offset = ri->offset;
    bool sparse = false;
    if ((ri->flags & VFIO_REGION_INFO_FLAG_CAPS) != 0) {
        const auto* base = reinterpret_cast<const std::byte*>(ri);
        std::uint32_t off = ri->cap_offset;
        while (off != 0 && off + sizeof(vfio_info_cap_header) <= ri->argsz) {
            const auto* hdr = reinterpret_cast<const vfio_info_cap_header*>(base + off);
            if (hdr->id == VFIO_REGION_INFO_CAP_SPARSE_MMAP) {
                const auto* cap = reinterpret_cast<const vfio_region_info_cap_sparse_mmap*>(hdr);
                sparse = true;
                for (std::uint32_t i = 0; i < cap->nr_areas; ++i) {
                    if (cap->areas[i].size != 0) {
                        out.mmap_areas.emplace_back(cap->areas[i].offset, cap->areas[i].size);
                    }
                }
            } else if (hdr->id == VFIO_REGION_INFO_CAP_MSIX_MAPPABLE) {
                out.msix_mappable = true;
            }
            off = hdr->next;
        }
    }
    if (!sparse && (ri->flags & VFIO_REGION_INFO_FLAG_MMAP) != 0 && ri->size != 0) {
        out.mmap_areas.emplace_back(0, ri->size);
    }
    if ((ri->flags & VFIO_REGION_INFO_FLAG_MMAP) == 0) {
        out.mmap_areas.clear();
    }
    return out;
}

Result<MappedBar> MappedBar::map(int device_fd, const RegionInfo& info) {
    MappedBar bar;
    bar.fd_ = device_fd;
    bar.region_offset_ = info.offset;
    bar.size_ = info.size;
    const int prot = ((info.flags & VFIO_REGION_INFO_FLAG_READ) != 0 ? PROT_READ : 0) |
                     ((info.flags & VFIO_REGION_INFO_FLAG_WRITE) != 0 ? PROT_WRITE : 0);
    for (auto [off, len] : info.mmap_areas) {
        void* p = ::mmap(nullptr, len, prot, MAP_SHARED, device_fd,
                         static_cast<off_t>(info.offset + off));
        if (p == MAP_FAILED) {
            continue;  // this area stays on the pread/pwrite path
        }
        bar.areas_.push_back({off, len, static_cast<std::byte*>(p)});
    }
    return bar;
}

MappedBar::MappedBar(MappedBar&& other) noexcept
    : fd_(std::exchange(other.fd_, -1)),
      region_offset_(other.region_offset_),
      size_(std::exchange(other.size_, 0)),
      areas_(std::exchange(other.areas_, {})) {}

MappedBar& MappedBar::operator=(MappedBar&& other) noexcept {
    if (this != &other) {
        unmap_all();
        fd_ = std::exchange(other.fd_, -1);
        region_offset_ = other.region_offset_;
        size_ = std::exchange(other.size_, 0);
        areas_ = std::exchange(other.areas_, {});
    }
    return *this;
}

MappedBar::~MappedBar() {
    unmap_all();
}

void MappedBar::unmap_all() noexcept {
    for (const Area& a : areas_) {
        ::munmap(a.ptr, a.len);
    }
    areas_.clear();
}

std::uint64_t MappedBar::mapped_bytes() const noexcept {
    std::uint64_t n = 0;
    for (const Area& a : areas_) {
        n += a.len;
    }
    return n;
}

const MappedBar::Area* MappedBar::area_for(std::uint64_t off) const noexcept {
    for (const Area& a : areas_) {
        if (off >= a.off && off + 4 <= a.off + a.len) {
            return &a;
        }
    }
    return nullptr;
}

std::uint32_t MappedBar::read32(std::uint64_t off) const noexcept {
    if (const Area* a = area_for(off)) {
        return *reinterpret_cast<const volatile std::uint32_t*>(a->ptr + (off - a->off));
    }
    std::uint32_t v = 0xffffffffu;
    if (::pread(fd_, &v, sizeof(v), static_cast<off_t>(region_offset_ + off)) != sizeof(v)) {
        return 0xffffffffu;
    }
    return v;
}

void MappedBar::write32(std::uint64_t off, std::uint32_t value) const noexcept {
    if (const Area* a = area_for(off)) {
        *reinterpret_cast<volatile std::uint32_t*>(a->ptr + (off - a->off)) = value;
        return;
    }
    (void)!::pwrite(fd_, &value, sizeof(value), static_cast<off_t>(region_offset_ + off));
}

Result<std::uint32_t> config_read(int device_fd, std::uint64_t cfg_offset, std::uint32_t off,
                                  unsigned width) {
    std::uint32_t v = 0;
    const ssize_t n = ::pread(device_fd, &v, width, static_cast<off_t>(cfg_offset + off));
    if (n != static_cast<ssize_t>(width)) {
        return fail_detail(n < 0 ? errno : EIO, "config space read at " + std::to_string(off));
    }
    return v;  // little-endian host assumed (x86-64, arm64 LE)
}

Result<void> config_write(int device_fd, std::uint64_t cfg_offset, std::uint32_t off,
                          unsigned width, std::uint32_t value) {
    const ssize_t n = ::pwrite(device_fd, &value, width, static_cast<off_t>(cfg_offset + off));
    if (n != static_cast<ssize_t>(width)) {
        return fail_detail(n < 0 ? errno : EIO, "config space write at " + std::to_string(off));
    }
    return ok();
}

}  // namespace tbv::vfio
