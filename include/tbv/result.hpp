// SPDX-License-Identifier: Apache-2.0
// Result<T>: the control-plane error convention (an expected-style value or a std::error_code).
//
// std::expected is C++23 and Debian 12 ships no tl-expected, so this is our own minimal type with
// the same spelling (has_value, value, error, operator bool, operator*, operator->), which keeps a
// later switch mechanical. The hot path never uses it: it returns counts or small enums.
#pragma once

#include <cerrno>
#include <string>
#include <system_error>
#include <type_traits>
#include <utility>
#include <variant>

namespace tbv {

/// Project error codes for protocol and device conditions that have no errno equivalent.
enum class Errc : int {
    ok = 0,
    device_gone,       ///< register reads return all-ones: the function left the bus
    iommu_fault,       ///< the device touched an IOVA it was not given
    ring_unavailable,  ///< ring number outside what REG_CAPS reports, or already taken
    ring_full,         ///< no free descriptor slot
    crc_mismatch,      ///< CRC-32C of a control packet does not match
    malformed,         ///< input too short, too long or with out-of-range fields
    timeout,           ///< no answer within the protocol's time limit
    link_down,         ///< no cable or the lane is not in CL0
    hop_in_use,        ///< HopID already allocated on that adapter
    not_supported,     ///< the hardware or mode cannot do it
    router_error,      ///< a router answered with an error packet (USB4 PDF 3) not mapped otherwise
};

const std::error_category& tbv_category() noexcept;

inline std::error_code make_error_code(Errc e) noexcept {
    return {static_cast<int>(e), tbv_category()};
}

/// An errno value as an error_code in the generic (POSIX) category.
inline std::error_code errno_code(int err) noexcept {
    return {err, std::generic_category()};
}

/// Tag carrying an error into a Result (mirrors std::unexpected).
struct Failure {
    std::error_code code;
};

inline Failure fail(Errc e) noexcept {
    return {make_error_code(e)};
}
inline Failure fail(std::errc e) noexcept {
    return {std::make_error_code(e)};
}
inline Failure fail_errno(int err) noexcept {
    return {errno_code(err)};
}

template <typename T>
class [[nodiscard]] Result {
public:
    Result(T value) : v_(std::in_place_index<0>, std::move(value)) {}  // NOLINT: implicit by design
    Result(Failure f) : v_(std::in_place_index<1>, f.code) {}          // NOLINT: implicit by design

    bool has_value() const noexcept { return v_.index() == 0; }
    explicit operator bool() const noexcept { return has_value(); }

    T& value() & { return std::get<0>(v_); }
    const T& value() const& { return std::get<0>(v_); }
    T&& value() && { return std::get<0>(std::move(v_)); }
    T& operator*() & { return value(); }
    const T& operator*() const& { return value(); }
    T&& operator*() && { return std::move(*this).value(); }
    T* operator->() { return &value(); }
    const T* operator->() const { return &value(); }

    std::error_code error() const noexcept {
        return has_value() ? std::error_code{} : std::get<1>(v_);
    }

private:
    std::variant<T, std::error_code> v_;
};

template <>
class [[nodiscard]] Result<void> {
public:
    Result() = default;
    Result(Failure f) : err_(f.code) {}  // NOLINT: implicit by design

    bool has_value() const noexcept { return !err_; }
    explicit operator bool() const noexcept { return has_value(); }
    std::error_code error() const noexcept { return err_; }

private:
    std::error_code err_{};
};

inline Result<void> ok() {
    return {};
}

}  // namespace tbv

template <>
struct std::is_error_code_enum<tbv::Errc> : std::true_type {};
