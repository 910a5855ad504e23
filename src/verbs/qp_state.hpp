// SPDX-License-Identifier: Apache-2.0
// QP state machine: which modify_qp transitions exist for RC, UC and UD, which attributes each one
// requires and allows (IB spec vol. 1, Modify Queue Pair: the "QP state transition properties"
// table; the Reset→Init→RTR→RTS summary in ibv_modify_qp(3)), the value ranges of those attributes
// against the device limits, and the asynchronous moves the transport makes (to SQE or ERR).
//
// Rules beyond the tables, with the reasons:
//  * Without kQpState in the mask the QP stays in its state and only that state's self-transition
//    attributes (INIT→INIT, RTS→RTS, SQD→SQD) may be given, as the spec defines it.
//  * kQpCurState must name the QP's actual state, except that RTS may be claimed while the QP has
//    moved to SQE on its own (the case the attribute exists for); the transition is then checked
//    from the actual state. Claiming any other state is EINVAL (it would let a caller skip states).
//  * Valid per spec but not offered here, so EINVAL: kQpAltPath (no alternate path, no
//    IBV_DEVICE_AUTO_PATH_MIG), kQpPathMigState other than MIGRATED, kQpCap (no QP resize) and
//    kQpRateLimit (not in any RC/UC/UD transition).
//  * PSNs and QPNs are 24-bit: larger values are EINVAL rather than silently masked.
//  * A failed modify changes nothing, the state included (ibv_modify_qp(3) NOTES).
#pragma once

#include <cstdint>

#include "tbv/result.hpp"
#include "tbv/verbs_types.hpp"
#include "verbs/limits.hpp"

namespace tbv::verbs {

/// Attribute bits one transition requires and allows (kQpState itself is in neither).
struct TransitionMasks {
    bool valid = false;
    std::uint32_t required = 0;
    std::uint32_t optional = 0;
};

/// The spec's table entry for cur → next on a QP of `type`.
TransitionMasks transition_masks(QpType type, QpState cur, QpState next) noexcept;

/// Attribute bits the spec allows somewhere that this device refuses (see above).
inline constexpr std::uint32_t kQpUnsupportedMask = kQpAltPath | kQpCap | kQpRateLimit;

/// EINVAL unless `mask` is acceptable for a QP of `type` in state `cur` (target state from
/// attr.qp_state when kQpState is set). Values are not looked at except the two states.
Result<void> check_attr_mask(QpType type, QpState cur, const QpAttr& attr, std::uint32_t mask);

/// EINVAL unless every attribute named in `mask` is in range for `limits`. (The mask check already
/// keeps RC-only attributes off UC and UD; the QP type is taken for rules still to come.)
Result<void> check_attr_values(QpType type, const QpAttr& attr, std::uint32_t mask,
                               const DeviceLimits& limits);

/// ibv_create_qp capacities: EINVAL beyond max_qp_wr, max_sge or max_inline.
Result<void> check_caps(const QpCaps& caps, const DeviceLimits& limits);

/// One QP's state and its current attributes.
///
/// Threading: modify() is control path and is serialised by the owner with the transport's
/// set_sq_error()/set_error() (which the progress engine calls).
class QpStateMachine {
public:
    QpStateMachine(QpType type, const DeviceLimits& limits) noexcept
        : type_(type), limits_(limits) {}

    QpType type() const noexcept { return type_; }
    QpState state() const noexcept { return state_; }
    /// Attributes as last set (reset to defaults on a move to RESET).
    const QpAttr& attr() const noexcept { return attr_; }

    /// ibv_modify_qp: all-or-nothing; EINVAL for a transition, mask or value the rules refuse.
    Result<void> modify(const QpAttr& attr, std::uint32_t mask);

    /// A send-queue error on UC/UD moves RTS to SQE; on RC (and from other states) the QP goes to
    /// ERR instead, as the spec prescribes. Returns the new state.
    QpState set_sq_error() noexcept;
    /// Any fatal condition: the QP goes to ERR (the transport then flushes its WRs).
    void set_error() noexcept {
        state_ = QpState::err;
        attr_.qp_state = attr_.cur_qp_state = state_;
    }

    /// Whether ibv_post_recv is accepted (everything but RESET; in ERR the WR is flushed).
    bool accepts_recv() const noexcept { return state_ != QpState::reset; }
    /// Whether ibv_post_send is accepted (RTS, SQD; SQE and ERR accept and flush).
    bool accepts_send() const noexcept {
        return state_ == QpState::rts || state_ == QpState::sqd || state_ == QpState::sqe ||
               state_ == QpState::err;
    }

private:
    QpType type_;
    DeviceLimits limits_;
    QpState state_ = QpState::reset;
    QpAttr attr_{};
};

}  // namespace tbv::verbs
