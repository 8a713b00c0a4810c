/* lzma2_symbols: a plain LZMA2 decoder that counts what it decodes, per 16 MiB of output.
 *
 * bench_symbols.py compiles it with the system C compiler and runs it on each archive's
 * LZMA2 folder. It reads the raw LZMA2 stream at OFFSET of FILE and prints one CSV row per
 * 16 MiB of output: literals, literals right after a match (coded against the match byte),
 * matches with a new distance, matches at each of the four repeated distances, 1-byte short
 * repeats, the bytes of new and of repeated matches, new matches from at least FAR_MIB back,
 * and the packed bytes read. A symbol counts in the stretch where it starts. Written from the
 * LZMA specification (lzma-specification.txt of the LZMA SDK); it checks chunk sizes,
 * distances and the input's end, and stops with a message on a corrupt stream.
 *
 *     lzma2_symbols FILE OFFSET [FAR_MIB [OUTPUT]]     (OUTPUT: write the decoded bytes there)
 */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define BIN_SHIFT 24
#define MAX_BINS 65536
#define MAX_OUTPUT (1ull << 40)

typedef uint16_t prob;

static const uint8_t *in;
static size_t in_pos, in_end;
static uint32_t range, code;

static void fail(const char *what, uint64_t pos) {
    fprintf(stderr, "lzma2_symbols: %s (output byte %llu)\n", what, (unsigned long long)pos);
    exit(1);
}

static inline uint8_t next_byte(void) { return in_pos < in_end ? in[in_pos++] : (in_pos++, 0); }

static void rc_init(void) {
    range = 0xFFFFFFFF;
    code = 0;
    next_byte();
    for (int i = 0; i < 4; i++) code = (code << 8) | next_byte();
}

static inline void normalize(void) {
    if (range < (1u << 24)) {
        range <<= 8;
        code = (code << 8) | next_byte();
    }
}

static inline int bit(prob *p) {
    uint32_t bound = (range >> 11) * *p;
    int b;
    if (code < bound) {
        range = bound;
        *p += (2048 - *p) >> 5;
        b = 0;
    } else {
        range -= bound;
        code -= bound;
        *p -= *p >> 5;
        b = 1;
    }
    normalize();
    return b;
}

static uint32_t direct_bits(int n) {
    uint32_t res = 0;
    do {
        range >>= 1;
        code -= range;
        uint32_t t = 0 - (code >> 31);
        code += range & t;
        normalize();
        res = (res << 1) + (t + 1);
    } while (--n);
    return res;
}

static uint32_t tree(prob *p, int n) {
    uint32_t m = 1;
    for (int i = 0; i < n; i++) m = (m << 1) + bit(&p[m]);
    return m - (1u << n);
}

static uint32_t reverse_tree(prob *p, int n) {
    uint32_t m = 1, s = 0;
    for (int i = 0; i < n; i++) {
        int b = bit(&p[m]);
        m = (m << 1) + b;
        s |= (uint32_t)b << i;
    }
    return s;
}

typedef struct {
    prob choice, choice2, low[16][8], mid[16][8], high[256];
} length_coder;

static prob literal_probs[0x300 << 12];
static prob is_match[192], is_rep[12], is_rep_g0[12], is_rep_g1[12], is_rep_g2[12], is_rep0_long[192];
static prob dist_slot[4][64], dist_special[115], dist_align[16];
static length_coder match_len, rep_len;
static int lc, lp, pb;
static unsigned state;
static uint32_t rep0, rep1, rep2, rep3;

static void init_probs(prob *p, size_t n) {
    for (size_t i = 0; i < n; i++) p[i] = 1024;
}

static void reset_state(void) {
    init_probs(literal_probs, 0x300u << (lc + lp));
    init_probs(is_match, 192);
    init_probs(is_rep, 12);
    init_probs(is_rep_g0, 12);
    init_probs(is_rep_g1, 12);
    init_probs(is_rep_g2, 12);
    init_probs(is_rep0_long, 192);
    init_probs(&dist_slot[0][0], 256);
    init_probs(dist_special, 115);
    init_probs(dist_align, 16);
    init_probs((prob *)&match_len, sizeof match_len / sizeof(prob));
    init_probs((prob *)&rep_len, sizeof rep_len / sizeof(prob));
    state = 0;
    rep0 = rep1 = rep2 = rep3 = 0;
}

static uint32_t decode_length(length_coder *c, unsigned pos_state) {
    if (!bit(&c->choice)) return tree(c->low[pos_state], 3);
    if (!bit(&c->choice2)) return 8 + tree(c->mid[pos_state], 3);
    return 16 + tree(c->high, 8);
}

enum { LIT, MLIT, MATCH, REP0, REP1, REP2, REP3, SHORT, MATCH_BYTES, REP_BYTES, FAR, PACKED, FIELDS };
static const char *names[FIELDS] = {"literals", "match_literals", "matches", "rep0", "rep1", "rep2",
                                    "rep3", "short_reps", "match_bytes", "rep_bytes", "far_matches",
                                    "packed_bytes"};
static uint64_t stats[MAX_BINS][FIELDS];

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: lzma2_symbols FILE OFFSET [FAR_MIB [OUTPUT]]\n");
        return 2;
    }
    int fd = open(argv[1], O_RDONLY);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0 || st.st_size == 0) {
        perror(argv[1]);
        return 1;
    }
    in = mmap(NULL, st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    in_pos = strtoull(argv[2], NULL, 0);
    in_end = st.st_size;
    uint64_t far = (argc > 3 ? strtoull(argv[3], NULL, 0) : 256ull) << 20;
    uint64_t capacity = MAX_OUTPUT;
    uint8_t *out = MAP_FAILED;
    while (capacity >= (1ull << 30)) { /* less address space under a strict overcommit policy */
        out = mmap(NULL, capacity, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (out != MAP_FAILED) break;
        capacity >>= 2;
    }
    if (in == MAP_FAILED || out == MAP_FAILED) fail("cannot map the input or the output", 0);
    uint64_t pos = 0, last_bin = 0;
    size_t last_in = in_pos;
    int have_props = 0;
    for (;;) {
        if (in_pos >= in_end) fail("the stream ends without an end marker", pos);
        uint8_t control = in[in_pos++];
        if (control == 0) break;
        if (control == 1 || control == 2) { /* uncompressed chunk */
            if (in_pos + 2 > in_end) fail("truncated chunk header", pos);
            uint32_t n = ((uint32_t)in[in_pos] << 8 | in[in_pos + 1]) + 1;
            in_pos += 2;
            if (in_pos + n > in_end || pos + n > capacity) fail("truncated uncompressed chunk", pos);
            memcpy(out + pos, in + in_pos, n);
            in_pos += n;
            pos += n;
            continue;
        }
        if (control < 0x80) fail("bad chunk control byte", pos);
        if (in_pos + 4 > in_end) fail("truncated chunk header", pos);
        uint32_t unpacked = ((uint32_t)(control & 0x1F) << 16) + ((uint32_t)in[in_pos] << 8 | in[in_pos + 1]) + 1;
        uint32_t packed = ((uint32_t)in[in_pos + 2] << 8 | in[in_pos + 3]) + 1;
        in_pos += 4;
        int reset = (control >> 5) & 3;
        if (reset >= 2) {
            int p = next_byte();
            if (p >= 9 * 5 * 5) fail("bad properties byte", pos);
            lc = p % 9, p /= 9, lp = p % 5, pb = p / 5;
            if (lc + lp > 12) fail("lc + lp over 12", pos);
            have_props = 1;
        }
        if (!have_props) fail("an LZMA chunk before any properties", pos);
        if (reset >= 1) reset_state();
        size_t chunk_start = in_pos;
        if (chunk_start + packed > in_end) fail("truncated LZMA chunk", pos);
        in_end = chunk_start + packed; /* the range decoder never reads past its chunk */
        rc_init();
        uint64_t end = pos + unpacked;
        if (end > capacity) fail("output too large", pos);
        uint32_t pb_mask = (1u << pb) - 1, lp_mask = (1u << lp) - 1;
        while (pos < end) {
            uint64_t b = pos >> BIN_SHIFT;
            if (b >= MAX_BINS) fail("output too large", pos);
            if (b != last_bin) {
                stats[last_bin][PACKED] += in_pos - last_in;
                last_in = in_pos;
                last_bin = b;
            }
            unsigned pos_state = pos & pb_mask;
            if (!bit(&is_match[(state << 4) + pos_state])) {
                uint8_t prev = pos ? out[pos - 1] : 0;
                prob *p = literal_probs + 0x300 * (((pos & lp_mask) << lc) + (prev >> (8 - lc)));
                uint32_t s = 1;
                if (state >= 7) {
                    unsigned match_byte = out[pos - rep0 - 1];
                    do {
                        unsigned match_bit = (match_byte >> 7) & 1;
                        match_byte <<= 1;
                        unsigned got = bit(&p[((1 + match_bit) << 8) + s]);
                        s = (s << 1) | got;
                        if (match_bit != got) break;
                    } while (s < 0x100);
                    stats[b][MLIT]++;
                } else {
                    stats[b][LIT]++;
                }
                while (s < 0x100) s = (s << 1) | bit(&p[s]);
                out[pos++] = (uint8_t)s;
                state = state < 4 ? 0 : state < 10 ? state - 3 : state - 6;
                continue;
            }
            uint32_t len;
            if (bit(&is_rep[state])) {
                if (pos == 0) fail("a repeated match at the start", pos);
                if (!bit(&is_rep_g0[state])) {
                    if (!bit(&is_rep0_long[(state << 4) + pos_state])) {
                        state = state < 7 ? 9 : 11;
                        out[pos] = out[pos - rep0 - 1];
                        pos++;
                        stats[b][SHORT]++;
                        continue;
                    }
                    stats[b][REP0]++;
                } else {
                    uint32_t dist;
                    if (!bit(&is_rep_g1[state])) {
                        dist = rep1;
                        stats[b][REP1]++;
                    } else {
                        if (!bit(&is_rep_g2[state])) {
                            dist = rep2;
                            stats[b][REP2]++;
                        } else {
                            dist = rep3;
                            rep3 = rep2;
                            stats[b][REP3]++;
                        }
                        rep2 = rep1;
                    }
                    rep1 = rep0;
                    rep0 = dist;
                }
                len = decode_length(&rep_len, pos_state);
                state = state < 7 ? 8 : 11;
                stats[b][REP_BYTES] += len + 2;
            } else {
                rep3 = rep2, rep2 = rep1, rep1 = rep0;
                len = decode_length(&match_len, pos_state);
                state = state < 7 ? 7 : 10;
                uint32_t slot = tree(dist_slot[len < 3 ? len : 3], 6), dist;
                if (slot < 4) {
                    dist = slot;
                } else {
                    int n = (slot >> 1) - 1;
                    dist = (2 | (slot & 1)) << n;
                    if (slot < 14) {
                        dist += reverse_tree(dist_special + dist - slot, n);
                    } else {
                        dist += direct_bits(n - 4) << 4;
                        dist += reverse_tree(dist_align, 4);
                    }
                }
                if (dist == 0xFFFFFFFF) break; /* LZMA end marker: LZMA2 does not use it */
                rep0 = dist;
                stats[b][MATCH]++;
                stats[b][MATCH_BYTES] += len + 2;
                if (dist >= far) stats[b][FAR]++;
            }
            len += 2;
            if (pos + len > end) fail("a match crosses its chunk's end", pos);
            if (rep0 >= pos) fail("a match reaches before the stream's start", pos);
            uint8_t *dst = out + pos;
            const uint8_t *src = out + pos - rep0 - 1;
            for (uint32_t i = 0; i < len; i++) dst[i] = src[i];
            pos += len;
        }
        if (in_pos != chunk_start + packed) fail("an LZMA chunk's packed size does not match", pos);
        in_end = st.st_size;
    }
    stats[last_bin][PACKED] += in_pos - last_in;
    printf("bin");
    for (int i = 0; i < FIELDS; i++) printf(",%s", names[i]);
    printf("\n");
    for (uint64_t b = 0; b <= last_bin; b++) {
        printf("%llu", (unsigned long long)b);
        for (int i = 0; i < FIELDS; i++) printf(",%llu", (unsigned long long)stats[b][i]);
        printf("\n");
    }
    fprintf(stderr, "lzma2_symbols: %llu bytes decoded\n", (unsigned long long)pos);
    if (argc > 4) {
        FILE *f = fopen(argv[4], "wb");
        if (!f || fwrite(out, 1, pos, f) != pos || fclose(f)) fail("cannot write the output", pos);
    }
    return 0;
}
