// SPDX-License-Identifier: Apache-2.0
// The provider through the real libibverbs, in-process: tbvdv_get_device_list, ibv_open_device
// (sysfs NULL, cmd_fd -1), our ops where libibverbs' inline verbs read them, the verbs error
// conventions (NULL + errno, positive errno, bad_wr), libibverbs' EOPNOTSUPP for what we leave
// out, completion channels and GIDs through tbvdv_*, the interposer (preloaded by meson for
// this test) including its ibv_import_device guard, and UD GRHs read back by ibv_init_ah_from_wc
// (IB mode here; the GID mode's RoCE v2 form in a second run, 'provider-api-gid').
#include <endian.h>
#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "catch.hpp"
#include "infiniband/tbvdv.h"
#include "process.hpp"
#include "verbs/limits.hpp"

// The public verbs_context must end with the ibv_context libibverbs hands out (the provider finds
// its context from it).
static_assert(offsetof(verbs_context, context) + sizeof(ibv_context) == sizeof(verbs_context));

namespace {

/// One cable for the whole process: the provider reads TBV_EMU once.
void use_cable() {
    static const tbv::test::CableFile cable(tbv::test::unique_name("pt-api-"));  // gone at exit
    static const bool once = [] {
        ::setenv("TBV_EMU", cable.name().c_str(), 1);
        ::setenv("TBV_LINK_WAIT_MS", "0", 1);
        ::setenv("TBV_VFIO", "0", 1);  // tbv0 only, on machines with NHIs bound to vfio-pci too
        return true;
    }();
    (void)once;
}

struct Opened {
    ibv_context* ctx = nullptr;
    Opened() {
        use_cable();
        int n = 0;
        ibv_device** list = tbvdv_get_device_list(&n);
        REQUIRE(list != nullptr);
        REQUIRE(n == 1);
        ctx = ibv_open_device(list[0]);
        ibv_free_device_list(list);
        REQUIRE(ctx != nullptr);
    }
    ~Opened() {
        if (ctx != nullptr) {
            CHECK(ibv_close_device(ctx) == 0);
        }
    }
};

/// A UD QP that sends to itself (a loopback datagram): receive slots of 40 + 256 bytes, the last
/// slot holding what is sent.
struct UdSelf {
    static constexpr std::size_t kSlot = 40 + 256;
    static constexpr std::size_t kSendSlot = 3;
    static constexpr std::uint32_t kQkey = 0x11;
    ibv_pd* pd = nullptr;
    ibv_cq* cq = nullptr;
    ibv_mr* mr = nullptr;
    ibv_qp* qp = nullptr;
    std::vector<std::uint8_t> buf = std::vector<std::uint8_t>(4 * kSlot);

    explicit UdSelf(ibv_context* ctx) {
        pd = ibv_alloc_pd(ctx);
        REQUIRE(pd != nullptr);
        cq = ibv_create_cq(ctx, 8, nullptr, nullptr, 0);
        REQUIRE(cq != nullptr);
        const int access = IBV_ACCESS_LOCAL_WRITE;  // an int: ibv_reg_mr masks it with another enum
        mr = ibv_reg_mr(pd, buf.data(), buf.size(), access);
        REQUIRE(mr != nullptr);
        ibv_qp_init_attr ia{};
        ia.send_cq = cq;
        ia.recv_cq = cq;
        ia.qp_type = IBV_QPT_UD;
        ia.cap = {4, 4, 1, 1, 0};
        qp = ibv_create_qp(pd, &ia);
        REQUIRE(qp != nullptr);
        ibv_qp_attr m{};
        m.qp_state = IBV_QPS_INIT;
        m.port_num = 1;
        m.qkey = kQkey;
        REQUIRE(ibv_modify_qp(qp, &m,
                              IBV_QP_STATE | IBV_QP_PKEY_INDEX | IBV_QP_PORT | IBV_QP_QKEY) == 0);
        m = ibv_qp_attr{};
        m.qp_state = IBV_QPS_RTR;
        REQUIRE(ibv_modify_qp(qp, &m, IBV_QP_STATE) == 0);
        m = ibv_qp_attr{};
        m.qp_state = IBV_QPS_RTS;
        REQUIRE(ibv_modify_qp(qp, &m, IBV_QP_STATE | IBV_QP_SQ_PSN) == 0);
        for (std::size_t i = 0; i < kSlot; ++i) {
            slot(kSendSlot)[i] = static_cast<std::uint8_t>('a' + i % 26);
        }
    }
    ~UdSelf() {
        CHECK(ibv_destroy_qp(qp) == 0);
        CHECK(ibv_destroy_cq(cq) == 0);
        CHECK(ibv_dereg_mr(mr) == 0);
        CHECK(ibv_dealloc_pd(pd) == 0);
    }
    UdSelf(const UdSelf&) = delete;
    UdSelf& operator=(const UdSelf&) = delete;

    std::uint8_t* slot(std::size_t i) { return buf.data() + i * kSlot; }

    /// Sends `len` bytes of the send slot through `ah` to this QP, received into `rx` (filled
    /// with 0xEE first); returns the receive completion.
    ibv_wc send_to_self(ibv_ah* ah, std::uint32_t len, std::size_t rx) {
        std::fill(slot(rx), slot(rx) + kSlot, std::uint8_t{0xEE});
        ibv_sge rg{reinterpret_cast<std::uintptr_t>(slot(rx)), kSlot, mr->lkey};
        ibv_recv_wr rw{};
        rw.wr_id = rx;
        rw.sg_list = &rg;
        rw.num_sge = 1;
        ibv_recv_wr* bad_r = nullptr;
        REQUIRE(ibv_post_recv(qp, &rw, &bad_r) == 0);
        ibv_sge sg{reinterpret_cast<std::uintptr_t>(slot(kSendSlot)), len, mr->lkey};
        ibv_send_wr sw{};
        sw.wr_id = 100;
        sw.sg_list = &sg;
        sw.num_sge = 1;
        sw.opcode = IBV_WR_SEND;
        sw.send_flags = IBV_SEND_SIGNALED;
        sw.wr.ud.ah = ah;
        sw.wr.ud.remote_qpn = qp->qp_num;
        sw.wr.ud.remote_qkey = kQkey;
        ibv_send_wr* bad_s = nullptr;
        REQUIRE(ibv_post_send(qp, &sw, &bad_s) == 0);
        ibv_wc recv{};
        int got = 0;
        for (int spins = 0; got < 2 && spins < 20'000'000; ++spins) {  // a hang guard only
            ibv_wc wc{};
            if (ibv_poll_cq(cq, 1, &wc) == 1) {
                ++got;
                CHECK(wc.status == IBV_WC_SUCCESS);
                if (wc.opcode == IBV_WC_RECV) {
                    recv = wc;
                }
            }
        }
        REQUIRE(got == 2);
        REQUIRE(recv.opcode == IBV_WC_RECV);
        CHECK(recv.wr_id == rx);
        CHECK(recv.byte_len == 40 + len);
        CHECK(recv.src_qp == qp->qp_num);
        CHECK(std::memcmp(slot(rx) + 40, slot(kSendSlot), len) == 0);
        return recv;
    }
};

}  // namespace

TEST_CASE("tbvdv_get_device_list: tbv0, opened through libibverbs without sysfs", "[provider]") {
    use_cable();
    int n = -1;
    ibv_device** list = tbvdv_get_device_list(&n);
    REQUIRE(list != nullptr);
    REQUIRE(n == 1);
    CHECK(list[1] == nullptr);
    CHECK(std::string(ibv_get_device_name(list[0])) == "tbv0");
    CHECK(tbvdv_is_tbv_device(list[0]) == 1);
    CHECK(list[0]->transport_type == IBV_TRANSPORT_IB);
    CHECK(tbvdv_get_device_guid(list[0]) != 0);
    ibv_context* ctx = ibv_open_device(list[0]);
    ibv_free_device_list(list);  // the context keeps the device
    REQUIRE(ctx != nullptr);
    CHECK(ctx->cmd_fd == -1);
    CHECK(ctx->async_fd >= 0);
    CHECK(ctx->num_comp_vectors >= 1);

    ibv_device_attr a{};
    REQUIRE(ibv_query_device(ctx, &a) == 0);
    CHECK(a.vendor_id == 0x8086);
    CHECK(a.max_qp > 0);
    CHECK(a.max_qp_wr >= 512);
    CHECK(a.max_sge >= 8);
    CHECK(a.phys_port_cnt == 1);
    CHECK(std::string(a.fw_ver).rfind("tbverbs ", 0) == 0);

    ibv_port_attr p{};
    REQUIRE(ibv_query_port(ctx, 1, &p) == 0);
    CHECK(p.link_layer == IBV_LINK_LAYER_INFINIBAND);
    CHECK(p.lid != 0);
    CHECK(p.active_mtu == IBV_MTU_2048);
    CHECK(p.state == IBV_PORT_DOWN);  // no peer on this cable
    CHECK(ibv_query_port(ctx, 2, &p) == EINVAL);

    ibv_gid gid{};
    REQUIRE(tbvdv_query_gid(ctx, 1, 0, &gid) == 0);
    CHECK(gid.raw[0] == 0xfe);
    CHECK(gid.raw[1] == 0x80);
    CHECK(tbvdv_query_gid(ctx, 1, 1, &gid) == -1);
    __be16 pkey = 0;
    CHECK(tbvdv_query_pkey(ctx, 1, 0, &pkey) == 0);
    CHECK(pkey == 0xffff);
    CHECK(ibv_close_device(ctx) == 0);
}

TEST_CASE("ops reach the provider; errors follow the verbs conventions", "[provider]") {
    Opened o;
    ibv_context* ctx = o.ctx;
    ibv_pd* pd = ibv_alloc_pd(ctx);
    REQUIRE(pd != nullptr);
    std::vector<char> buf(8192);

    // (ints: verbs.h's ibv_reg_mr macro masks the flags with an enum of another type)
    const int access = IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE |
                       static_cast<int>(IBV_ACCESS_RELAXED_ORDERING);
    const int remote_only = IBV_ACCESS_REMOTE_WRITE;
    ibv_mr* mr = ibv_reg_mr(pd, buf.data(), buf.size(), access);
    REQUIRE(mr != nullptr);
    CHECK(mr->lkey != 0);
    CHECK(mr->addr == buf.data());
    errno = 0;
    CHECK(ibv_reg_mr(pd, buf.data(), buf.size(), remote_only) == nullptr);
    CHECK(errno == EINVAL);  // remote write needs local write

    ibv_cq* cq = ibv_create_cq(ctx, 16, nullptr, nullptr, 0);
    REQUIRE(cq != nullptr);
    CHECK(cq->cqe >= 16);
    ibv_wc wc[4];
    CHECK(ibv_poll_cq(cq, 4, wc) == 0);  // our poll_cq, inline in this program
    errno = 0;
    CHECK(ibv_create_cq(ctx, 0, nullptr, nullptr, 0) == nullptr);
    CHECK(errno == EINVAL);

    ibv_qp_init_attr ia{};
    ia.send_cq = cq;
    ia.recv_cq = cq;
    ia.qp_type = IBV_QPT_RC;
    ia.cap = {16, 16, 1, 1, 64};
    ibv_qp_init_attr too_big = ia;
    too_big.cap.max_send_wr = 1u << 24;
    errno = 0;
    CHECK(ibv_create_qp(pd, &too_big) == nullptr);
    CHECK(errno == EINVAL);
    ibv_qp_init_attr raw = ia;
    raw.qp_type = IBV_QPT_RAW_PACKET;
    errno = 0;
    CHECK(ibv_create_qp(pd, &raw) == nullptr);
    CHECK(errno == EOPNOTSUPP);

    ibv_qp* qp = ibv_create_qp(pd, &ia);
    REQUIRE(qp != nullptr);
    CHECK(qp->qp_num != 0);
    CHECK(qp->state == IBV_QPS_RESET);
    CHECK(ia.cap.max_send_wr >= 16);
    CHECK(ia.cap.max_inline_data >= 64);

    ibv_qp_attr attr{};
    attr.qp_state = IBV_QPS_INIT;
    attr.pkey_index = 0;
    attr.port_num = 1;
    attr.qp_access_flags = IBV_ACCESS_REMOTE_WRITE;
    REQUIRE(ibv_modify_qp(qp, &attr,
                          IBV_QP_STATE | IBV_QP_PKEY_INDEX | IBV_QP_PORT | IBV_QP_ACCESS_FLAGS) ==
            0);
    CHECK(qp->state == IBV_QPS_INIT);
    ibv_qp_attr qa{};
    ibv_qp_init_attr qi{};
    REQUIRE(ibv_query_qp(qp, &qa, IBV_QP_STATE | IBV_QP_CAP, &qi) == 0);
    CHECK(qa.qp_state == IBV_QPS_INIT);
    CHECK(qa.qp_access_flags == IBV_ACCESS_REMOTE_WRITE);
    CHECK(qi.cap.max_send_wr == ia.cap.max_send_wr);
    CHECK(qi.send_cq == cq);

    // A receive chain whose second request is malformed: the first is posted, bad_wr names the
    // second, the return value is a positive errno.
    ibv_sge sge{reinterpret_cast<std::uintptr_t>(buf.data()), 64, mr->lkey};
    ibv_recv_wr rw[2]{};
    rw[0].wr_id = 1;
    rw[0].sg_list = &sge;
    rw[0].num_sge = 1;
    rw[0].next = &rw[1];
    rw[1].wr_id = 2;
    rw[1].sg_list = &sge;
    rw[1].num_sge = -1;
    ibv_recv_wr* bad_r = nullptr;
    CHECK(ibv_post_recv(qp, &rw[0], &bad_r) == EINVAL);
    CHECK(bad_r == &rw[1]);

    // An opcode the device does not offer (memory windows).
    ibv_send_wr sw{};
    sw.wr_id = 3;
    sw.opcode = IBV_WR_BIND_MW;
    ibv_send_wr* bad_s = nullptr;
    CHECK(ibv_post_send(qp, &sw, &bad_s) == EINVAL);
    CHECK(bad_s == &sw);

    // Left to libibverbs' dummy ops.
    errno = 0;
    CHECK(ibv_alloc_mw(pd, IBV_MW_TYPE_1) == nullptr);
    CHECK(errno == EOPNOTSUPP);

    // Objects in use cannot go.
    CHECK(ibv_destroy_cq(cq) == EBUSY);
    CHECK(ibv_dealloc_pd(pd) == EBUSY);

    CHECK(ibv_destroy_qp(qp) == 0);
    CHECK(ibv_destroy_cq(cq) == 0);
    CHECK(ibv_dereg_mr(mr) == 0);
    CHECK(ibv_dealloc_pd(pd) == 0);
}

TEST_CASE("completion channels and GIDs through the interposed verbs", "[provider]") {
    Opened o;
    ibv_context* ctx = o.ctx;
    // This program runs with the interposer preloaded: the plain verbs reach the provider.
    ibv_comp_channel* ch = ibv_create_comp_channel(ctx);
    REQUIRE(ch != nullptr);
    CHECK(ch->fd >= 0);
    ibv_cq* cq = ibv_create_cq(ctx, 8, nullptr, ch, 0);
    REQUIRE(cq != nullptr);
    CHECK(ibv_req_notify_cq(cq, 0) == 0);
    CHECK(ibv_destroy_comp_channel(ch) == EBUSY);  // a CQ still uses it
    CHECK(ibv_destroy_cq(cq) == 0);
    CHECK(ibv_destroy_comp_channel(ch) == 0);

    ibv_gid gid{};
    REQUIRE(ibv_query_gid(ctx, 1, 0, &gid) == 0);
    CHECK(gid.raw[0] == 0xfe);
    ibv_gid_entry e{};
    REQUIRE(ibv_query_gid_ex(ctx, 1, 0, &e, 0) == 0);
    CHECK(e.gid_type == IBV_GID_TYPE_IB);
    CHECK(std::memcmp(e.gid.raw, gid.raw, 16) == 0);
    __be16 pkey = 0;
    CHECK(ibv_query_pkey(ctx, 1, 0, &pkey) == 0);
    CHECK(ibv_get_pkey_index(ctx, 1, pkey) == 0);
    CHECK(ibv_get_device_guid(ctx->device) != 0);
}

TEST_CASE("interposer: ibv_get_device_list has tbv0; ibv_import_device does not crash",
          "[provider]") {
    use_cable();
    int n = 0;
    ibv_device** list = ibv_get_device_list(&n);
    REQUIRE(list != nullptr);
    bool found = false;
    for (int i = 0; i < n; ++i) {
        found = found || std::string(ibv_get_device_name(list[i])) == "tbv0";
    }
    CHECK(found);
    ibv_free_device_list(list);
    // libibverbs looks the char device up through each listed device's sysfs data, which ours
    // do not have: the interposer hides them from that lookup.
    const int fd = ::open("/dev/null", O_RDWR);
    REQUIRE(fd >= 0);
    errno = 0;
    CHECK(ibv_import_device(fd) == nullptr);
    CHECK(errno == ENODEV);
    ::close(fd);
}

TEST_CASE("address handles: a GRH with DLID 0 names its host by GID", "[provider]") {
    Opened o;
    ibv_context* ctx = o.ctx;
    ibv_pd* pd = ibv_alloc_pd(ctx);
    REQUIRE(pd != nullptr);
    ibv_gid own{};
    REQUIRE(ibv_query_gid(ctx, 1, 0, &own) == 0);
    ibv_ah_attr a{};
    a.is_global = 1;
    a.grh.dgid = own;
    a.grh.hop_limit = 1;
    a.port_num = 1;
    a.dlid = 0;
    ibv_ah* ah = ibv_create_ah(pd, &a);  // our own GID: loopback
    REQUIRE(ah != nullptr);
    CHECK(ibv_destroy_ah(ah) == 0);
    a.grh.dgid.raw[15] ^= 1;  // nobody's
    errno = 0;
    CHECK(ibv_create_ah(pd, &a) == nullptr);
    CHECK(errno == EHOSTUNREACH);
    a.grh.dgid = own;
    a.grh.sgid_index = 1;  // the table has one GID
    errno = 0;
    CHECK(ibv_create_ah(pd, &a) == nullptr);
    CHECK(errno == EINVAL);

    // The same for a connected QP's path (modify_qp to RTR).
    ibv_cq* cq = ibv_create_cq(ctx, 4, nullptr, nullptr, 0);
    REQUIRE(cq != nullptr);
    ibv_qp_init_attr ia{};
    ia.send_cq = cq;
    ia.recv_cq = cq;
    ia.qp_type = IBV_QPT_RC;
    ia.cap = {1, 1, 1, 1, 0};
    ibv_qp* qp = ibv_create_qp(pd, &ia);
    REQUIRE(qp != nullptr);
    ibv_qp_attr m{};
    m.qp_state = IBV_QPS_INIT;
    m.port_num = 1;
    REQUIRE(ibv_modify_qp(
                qp, &m, IBV_QP_STATE | IBV_QP_PKEY_INDEX | IBV_QP_PORT | IBV_QP_ACCESS_FLAGS) == 0);
    m = ibv_qp_attr{};
    m.qp_state = IBV_QPS_RTR;
    m.path_mtu = IBV_MTU_1024;
    m.dest_qp_num = qp->qp_num;
    m.max_dest_rd_atomic = 1;
    m.min_rnr_timer = 12;
    m.ah_attr.is_global = 1;
    m.ah_attr.grh.dgid = own;
    m.ah_attr.grh.dgid.raw[15] ^= 1;
    m.ah_attr.port_num = 1;
    const int mask = IBV_QP_STATE | IBV_QP_AV | IBV_QP_PATH_MTU | IBV_QP_DEST_QPN | IBV_QP_RQ_PSN |
                     IBV_QP_MAX_DEST_RD_ATOMIC | IBV_QP_MIN_RNR_TIMER;
    CHECK(ibv_modify_qp(qp, &m, mask) == EHOSTUNREACH);
    m.ah_attr.grh.dgid = own;
    CHECK(ibv_modify_qp(qp, &m, mask) == 0);  // connected to itself, by GID
    CHECK(ibv_destroy_qp(qp) == 0);
    CHECK(ibv_destroy_cq(cq) == 0);
    CHECK(ibv_dealloc_pd(pd) == 0);
}

TEST_CASE("ibv_query_device reports exactly the limits the core enforces", "[provider]") {
    Opened o;
    ibv_context* ctx = o.ctx;
    const tbv::verbs::DeviceLimits& l = tbv::verbs::kDefaultLimits;
    ibv_device_attr a{};
    REQUIRE(ibv_query_device(ctx, &a) == 0);
    CHECK(a.max_mr_size == l.max_mr_size);
    CHECK(a.max_qp == static_cast<int>(l.max_qp));
    CHECK(a.max_qp_wr == static_cast<int>(l.max_qp_wr));
    CHECK(a.max_sge == static_cast<int>(l.max_sge));
    CHECK(a.max_sge_rd == static_cast<int>(l.max_sge_rd));
    CHECK(a.max_cq == static_cast<int>(l.max_cq));
    CHECK(a.max_cqe == static_cast<int>(l.max_cqe));
    CHECK(a.max_mr == static_cast<int>(l.max_mr));
    CHECK(a.max_pd == static_cast<int>(l.max_pd));
    CHECK(a.max_qp_rd_atom == static_cast<int>(l.max_qp_rd_atom));
    CHECK(a.max_qp_init_rd_atom == static_cast<int>(l.max_qp_init_rd_atom));
    CHECK(a.max_srq == static_cast<int>(l.max_srq));
    CHECK(a.max_srq_wr == static_cast<int>(l.max_srq_wr));
    CHECK(a.max_srq_sge == static_cast<int>(l.max_srq_sge));
    CHECK(a.max_ah == static_cast<int>(l.max_ah));
    CHECK(a.max_pkeys == l.max_pkeys);
    CHECK(a.phys_port_cnt == l.phys_port_cnt);
    CHECK(a.max_mw == 0);  // no memory windows
    CHECK(a.max_mcast_grp == 0);

    // At the edge: the reported maximum is accepted, one more is EINVAL.
    ibv_pd* pd = ibv_alloc_pd(ctx);
    REQUIRE(pd != nullptr);
    ibv_cq* big = ibv_create_cq(ctx, a.max_cqe, nullptr, nullptr, 0);
    CHECK(big != nullptr);
    if (big != nullptr) {
        CHECK(ibv_destroy_cq(big) == 0);
    }
    errno = 0;
    CHECK(ibv_create_cq(ctx, a.max_cqe + 1, nullptr, nullptr, 0) == nullptr);
    CHECK(errno == EINVAL);
    ibv_cq* cq = ibv_create_cq(ctx, 16, nullptr, nullptr, 0);
    REQUIRE(cq != nullptr);
    auto try_qp = [&](ibv_qp_cap cap) {
        ibv_qp_init_attr ia{};
        ia.send_cq = cq;
        ia.recv_cq = cq;
        ia.qp_type = IBV_QPT_RC;
        ia.cap = cap;
        errno = 0;
        ibv_qp* qp = ibv_create_qp(pd, &ia);
        const int e = qp == nullptr ? errno : 0;
        if (qp != nullptr) {
            CHECK(ibv_destroy_qp(qp) == 0);
        }
        return e;
    };
    const auto wr = static_cast<std::uint32_t>(a.max_qp_wr);
    const auto sge = static_cast<std::uint32_t>(a.max_sge);
    CHECK(try_qp({wr, wr, sge, sge, l.max_inline}) == 0);
    CHECK(try_qp({wr + 1, 1, 1, 1, 0}) == EINVAL);
    CHECK(try_qp({1, wr + 1, 1, 1, 0}) == EINVAL);
    CHECK(try_qp({1, 1, sge + 1, 1, 0}) == EINVAL);
    CHECK(try_qp({1, 1, 1, sge + 1, 0}) == EINVAL);
    CHECK(try_qp({1, 1, 1, 1, l.max_inline + 1}) == EINVAL);
    ibv_srq_init_attr sa{};
    sa.attr.max_wr = static_cast<std::uint32_t>(a.max_srq_wr) + 1;
    sa.attr.max_sge = 1;
    errno = 0;
    CHECK(ibv_create_srq(pd, &sa) == nullptr);
    CHECK(errno == EINVAL);
    CHECK(ibv_destroy_cq(cq) == 0);
    CHECK(ibv_dealloc_pd(pd) == 0);
}

TEST_CASE("SQD through libibverbs: the drained event, sq_draining, and back to RTS", "[provider]") {
    Opened o;
    ibv_context* ctx = o.ctx;
    ibv_pd* pd = ibv_alloc_pd(ctx);
    REQUIRE(pd != nullptr);
    constexpr std::size_t kLen = 64 * 1024;
    std::vector<char> src(kLen, 'x');
    std::vector<char> dst(kLen, 0);
    const int local = IBV_ACCESS_LOCAL_WRITE;  // an int: see the note in the test above
    ibv_mr* sm = ibv_reg_mr(pd, src.data(), kLen, local);
    ibv_mr* dm = ibv_reg_mr(pd, dst.data(), kLen, IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE);
    REQUIRE(sm != nullptr);
    REQUIRE(dm != nullptr);
    ibv_cq* cq = ibv_create_cq(ctx, 8, nullptr, nullptr, 0);
    REQUIRE(cq != nullptr);
    ibv_qp_init_attr ia{};
    ia.send_cq = cq;
    ia.recv_cq = cq;
    ia.qp_type = IBV_QPT_RC;
    ia.cap = {4, 4, 1, 1, 0};
    ibv_qp* qp = ibv_create_qp(pd, &ia);
    REQUIRE(qp != nullptr);

    // Connected to itself (by its own GID: the link of this test is never up).
    ibv_gid own{};
    REQUIRE(ibv_query_gid(ctx, 1, 0, &own) == 0);
    ibv_qp_attr m{};
    m.qp_state = IBV_QPS_INIT;
    m.port_num = 1;
    m.qp_access_flags = IBV_ACCESS_REMOTE_WRITE;
    REQUIRE(ibv_modify_qp(
                qp, &m, IBV_QP_STATE | IBV_QP_PKEY_INDEX | IBV_QP_PORT | IBV_QP_ACCESS_FLAGS) == 0);
    m = ibv_qp_attr{};
    m.qp_state = IBV_QPS_RTR;
    m.path_mtu = IBV_MTU_4096;
    m.dest_qp_num = qp->qp_num;
    m.max_dest_rd_atomic = 1;
    m.min_rnr_timer = 12;
    m.ah_attr.is_global = 1;
    m.ah_attr.grh.dgid = own;
    m.ah_attr.port_num = 1;
    REQUIRE(ibv_modify_qp(qp, &m,
                          IBV_QP_STATE | IBV_QP_AV | IBV_QP_PATH_MTU | IBV_QP_DEST_QPN |
                              IBV_QP_RQ_PSN | IBV_QP_MAX_DEST_RD_ATOMIC | IBV_QP_MIN_RNR_TIMER) ==
            0);
    m = ibv_qp_attr{};
    m.qp_state = IBV_QPS_RTS;
    m.timeout = 14;
    m.retry_cnt = 7;
    m.rnr_retry = 7;
    m.max_rd_atomic = 1;
    REQUIRE(ibv_modify_qp(qp, &m,
                          IBV_QP_STATE | IBV_QP_TIMEOUT | IBV_QP_RETRY_CNT | IBV_QP_RNR_RETRY |
                              IBV_QP_SQ_PSN | IBV_QP_MAX_QP_RD_ATOMIC) == 0);

    auto write_and_wait = [&](std::uint64_t id) {
        ibv_sge g{reinterpret_cast<std::uintptr_t>(src.data()), kLen, sm->lkey};
        ibv_send_wr wr{};
        wr.wr_id = id;
        wr.sg_list = &g;
        wr.num_sge = 1;
        wr.opcode = IBV_WR_RDMA_WRITE;
        wr.send_flags = IBV_SEND_SIGNALED;
        wr.wr.rdma.remote_addr = reinterpret_cast<std::uintptr_t>(dst.data());
        wr.wr.rdma.rkey = dm->rkey;
        ibv_send_wr* bad = nullptr;
        REQUIRE(ibv_post_send(qp, &wr, &bad) == 0);
        ibv_wc wc{};
        int got = 0;
        for (int spins = 0; got == 0 && spins < 20'000'000; ++spins) {  // a hang guard only
            got = ibv_poll_cq(cq, 1, &wc);
        }
        REQUIRE(got == 1);
        CHECK(wc.status == IBV_WC_SUCCESS);
        CHECK(wc.wr_id == id);
    };
    write_and_wait(1);
    CHECK(std::memcmp(dst.data(), src.data(), kLen) == 0);  // no 64 KiB dump into TAP

    // To SQD, asking for the event: the send queue is empty, so it is drained at once.
    m = ibv_qp_attr{};
    m.qp_state = IBV_QPS_SQD;
    m.en_sqd_async_notify = 1;
    REQUIRE(ibv_modify_qp(qp, &m, IBV_QP_STATE | IBV_QP_EN_SQD_ASYNC_NOTIFY) == 0);
    pollfd pf{ctx->async_fd, POLLIN, 0};
    REQUIRE(::poll(&pf, 1, 20000) == 1);  // a hang guard only
    ibv_async_event ev{};
    REQUIRE(ibv_get_async_event(ctx, &ev) == 0);
    CHECK(ev.event_type == IBV_EVENT_SQ_DRAINED);
    CHECK(ev.element.qp == qp);
    ibv_ack_async_event(&ev);
    ibv_qp_attr qa{};
    ibv_qp_init_attr qi{};
    REQUIRE(ibv_query_qp(qp, &qa, IBV_QP_STATE, &qi) == 0);
    CHECK(qa.qp_state == IBV_QPS_SQD);
    CHECK(qa.sq_draining == 0);
    CHECK(qa.en_sqd_async_notify == 1);

    // Back to RTS: the QP sends again.
    std::fill(dst.begin(), dst.end(), 0);
    m = ibv_qp_attr{};
    m.qp_state = IBV_QPS_RTS;
    REQUIRE(ibv_modify_qp(qp, &m, IBV_QP_STATE) == 0);
    write_and_wait(2);
    CHECK(std::memcmp(dst.data(), src.data(), kLen) == 0);  // no 64 KiB dump into TAP

    CHECK(ibv_destroy_qp(qp) == 0);
    CHECK(ibv_destroy_cq(cq) == 0);
    CHECK(ibv_dereg_mr(sm) == 0);
    CHECK(ibv_dereg_mr(dm) == 0);
    CHECK(ibv_dealloc_pd(pd) == 0);
}

TEST_CASE("UD through libibverbs: a global address handle brings a GRH and IBV_WC_GRH",
          "[provider]") {
    Opened o;
    ibv_context* ctx = o.ctx;
    UdSelf u(ctx);
    ibv_gid own{};
    REQUIRE(ibv_query_gid(ctx, 1, 0, &own) == 0);
    ibv_port_attr pa{};
    REQUIRE(ibv_query_port(ctx, 1, &pa) == 0);

    // By LID, without a GRH: the 40 bytes are left alone, no flag.
    ibv_ah_attr a{};
    a.dlid = pa.lid;
    a.port_num = 1;
    ibv_ah* plain = ibv_create_ah(u.pd, &a);
    REQUIRE(plain != nullptr);
    ibv_wc wc = u.send_to_self(plain, 64, 0);
    CHECK((wc.wc_flags & IBV_WC_GRH) == 0);
    CHECK(std::all_of(u.slot(0), u.slot(0) + 40, [](std::uint8_t b) { return b == 0xEE; }));

    // By GID (DLID 0): the IB GRH (IBA 8.3), SGID and DGID both our GID.
    a = ibv_ah_attr{};
    a.is_global = 1;
    a.grh.dgid = own;
    a.grh.flow_label = 0xBEEF5;
    a.grh.traffic_class = 0x44;
    a.grh.hop_limit = 9;
    a.port_num = 1;
    ibv_ah* global = ibv_create_ah(u.pd, &a);
    REQUIRE(global != nullptr);
    wc = u.send_to_self(global, 64, 1);
    CHECK((wc.wc_flags & IBV_WC_GRH) != 0);
    auto* grh = reinterpret_cast<ibv_grh*>(u.slot(1));
    const std::uint32_t vtf = be32toh(grh->version_tclass_flow);
    CHECK(vtf >> 28 == 6);
    CHECK((vtf >> 20 & 0xFF) == 0x44);
    CHECK((vtf & 0xFFFFF) == 0xBEEF5);
    CHECK(be16toh(grh->paylen) == 12 + 8 + 64 + 4);  // BTH, DETH, payload, ICRC
    CHECK(grh->next_hdr == 0x1B);
    CHECK(grh->hop_limit == 9);
    CHECK(std::memcmp(grh->sgid.raw, own.raw, 16) == 0);
    CHECK(std::memcmp(grh->dgid.raw, own.raw, 16) == 0);

    // libibverbs turns it into the address of the sender (us, by GID and LID) and it works.
    ibv_ah_attr back{};
    REQUIRE(ibv_init_ah_from_wc(ctx, 1, &wc, grh, &back) == 0);
    CHECK(back.is_global == 1);
    CHECK(std::memcmp(back.grh.dgid.raw, own.raw, 16) == 0);
    CHECK(back.grh.sgid_index == 0);
    CHECK(back.grh.flow_label == 0xBEEF5);
    CHECK(back.grh.traffic_class == 0x44);
    CHECK(back.grh.hop_limit == 9);
    CHECK(back.dlid == pa.lid);
    ibv_ah* reply = ibv_create_ah_from_wc(u.pd, &wc, grh, 1);
    REQUIRE(reply != nullptr);
    wc = u.send_to_self(reply, 8, 2);
    CHECK((wc.wc_flags & IBV_WC_GRH) != 0);
    CHECK(std::memcmp(reinterpret_cast<ibv_grh*>(u.slot(2))->sgid.raw, own.raw, 16) == 0);

    CHECK(ibv_destroy_ah(reply) == 0);
    CHECK(ibv_destroy_ah(global) == 0);
    CHECK(ibv_destroy_ah(plain) == 0);
}

// Hidden: meson runs it as 'provider-api-gid', a process of its own with TBV_GID_ADDR=10.0.0.1
// (the provider reads the environment once).
TEST_CASE("UD in the GID mode: RoCE v2's IPv4 GRH form; every address handle is global",
          "[.][gid-mode]") {
    Opened o;
    ibv_context* ctx = o.ctx;
    ibv_port_attr pa{};
    REQUIRE(ibv_query_port(ctx, 1, &pa) == 0);
    REQUIRE(pa.link_layer == IBV_LINK_LAYER_ETHERNET);  // TBV_GID_ADDR is set
    ibv_gid own{};
    REQUIRE(ibv_query_gid(ctx, 1, 0, &own) == 0);
    const std::uint8_t mapped[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 0, 0, 1};
    REQUIRE(std::memcmp(own.raw, mapped, 16) == 0);
    UdSelf u(ctx);

    // No GRH, no address (EINVAL, as on a RoCE port).
    ibv_ah_attr a{};
    a.dlid = 1;
    a.port_num = 1;
    errno = 0;
    CHECK(ibv_create_ah(u.pd, &a) == nullptr);
    CHECK(errno == EINVAL);

    a = ibv_ah_attr{};
    a.is_global = 1;
    a.grh.dgid = own;
    a.grh.traffic_class = 0x20;
    a.grh.hop_limit = 64;
    a.port_num = 1;
    ibv_ah* global = ibv_create_ah(u.pd, &a);
    REQUIRE(global != nullptr);
    ibv_wc wc = u.send_to_self(global, 64, 0);
    CHECK((wc.wc_flags & IBV_WC_GRH) != 0);
    // Bytes 0..19 are not defined for RoCE v2 over IPv4 (we zero them); the IPv4 header follows.
    const std::uint8_t* b = u.slot(0);
    CHECK(std::all_of(b, b + 20, [](std::uint8_t x) { return x == 0; }));
    const std::uint8_t* ip = b + 20;
    CHECK(ip[0] == 0x45);
    CHECK(ip[1] == 0x20);                                     // TOS
    CHECK((ip[2] << 8 | ip[3]) == 20 + 8 + 12 + 8 + 64 + 4);  // IPv4, UDP, BTH, DETH, ICRC
    CHECK(ip[8] == 64);                                       // TTL
    CHECK(ip[9] == 17);                                       // UDP
    CHECK(std::memcmp(ip + 12, mapped + 12, 4) == 0);
    CHECK(std::memcmp(ip + 16, mapped + 12, 4) == 0);

    // libibverbs reads the IPv4 form (ibv_query_gid_type: RoCE v2) back into a GID address.
    ibv_ah_attr back{};
    REQUIRE(ibv_init_ah_from_wc(ctx, 1, &wc, reinterpret_cast<ibv_grh*>(u.slot(0)), &back) == 0);
    CHECK(back.is_global == 1);
    CHECK(std::memcmp(back.grh.dgid.raw, own.raw, 16) == 0);
    CHECK(back.grh.sgid_index == 0);
    CHECK(back.grh.traffic_class == 0x20);
    CHECK(back.grh.hop_limit == 64);
    ibv_ah* reply = ibv_create_ah(u.pd, &back);  // DLID 0: resolved by GID
    REQUIRE(reply != nullptr);
    wc = u.send_to_self(reply, 8, 1);
    CHECK((wc.wc_flags & IBV_WC_GRH) != 0);
    CHECK(u.slot(1)[20] == 0x45);

    CHECK(ibv_destroy_ah(reply) == 0);
    CHECK(ibv_destroy_ah(global) == 0);
}
