/* Is a small verify pass on this CPU bound by memory or by arithmetic?
 *
 *   gcc -O3 -mavx2 -mfma -mf16c -o /tmp/q8_dot benchmarks/q8_dot.c && /tmp/q8_dot
 *
 * One thread multiplies a Q8_0 matrix of SmolLM2-135M's size (236,000 rows of 576, 145 MB: more
 * than any cache) by n = 1, 2, 4, 8 Q8_0 columns, with the AVX2 block dot ggml uses for Q8_0 x
 * Q8_0 (sign trick, maddubs, madd, convert, scale, fma), in three loop orders: per column over
 * 16-row blocks (ggml's own mul_mat), one row against all columns (one pass over the weights),
 * and 4 rows x 2 columns (llamafile's tinyBLAS tile), with and without software prefetch of the
 * rows PF ahead. Best of 7, ms. If n = 2 cost about what n = 1 does, the pass would be memory-bound
 * and small trees nearly free; it does not (docs/BENCHMARKS.md, "What any policy could reach"). */
#include <immintrin.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

typedef struct { uint16_t d; int8_t qs[32]; } __attribute__((packed)) block_q8;
#define K 576
#define NB (K / 32)
#define ROWS 236000L

static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec * 1e-9; }

static inline __m256 dot_block(const block_q8 * a, const block_q8 * b) {
    __m256i x = _mm256_loadu_si256((const __m256i *) a->qs), y = _mm256_loadu_si256((const __m256i *) b->qs);
    __m256i p = _mm256_maddubs_epi16(_mm256_sign_epi8(x, x), _mm256_sign_epi8(y, x));
    return _mm256_cvtepi32_ps(_mm256_madd_epi16(_mm256_set1_epi16(1), p));
}
static inline float hsum(__m256 v) {
    __m128 l = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    l = _mm_hadd_ps(l, l); l = _mm_hadd_ps(l, l); return _mm_cvtss_f32(l);
}
static inline __m256 scale(const block_q8 * a, const block_q8 * b) { return _mm256_set1_ps(_cvtsh_ss(a->d) * _cvtsh_ss(b->d)); }

static int PF = 0;  /* prefetch distance in rows; 0: none */

static void per_column(const block_q8 * A, const block_q8 * B, int n, float * C) {
    for (long r0 = 0; r0 < ROWS; r0 += 16)
        for (int j = 0; j < n; j++)
            for (long r = r0; r < r0 + 16 && r < ROWS; r++) {
                __m256 acc = _mm256_setzero_ps();
                const block_q8 * a = A + r * NB, * b = B + j * NB;
                for (int k = 0; k < NB; k++) acc = _mm256_fmadd_ps(scale(a + k, b + k), dot_block(a + k, b + k), acc);
                C[j * ROWS + r] = hsum(acc);
            }
}

static void row_all_columns(const block_q8 * A, const block_q8 * B, int n, float * C) {
    for (long r = 0; r < ROWS; r++) {
        __m256 acc[8];
        const block_q8 * a = A + r * NB;
        for (int j = 0; j < n; j++) acc[j] = _mm256_setzero_ps();
        if (PF && r + PF < ROWS)
            for (int q = 0; q < NB * (int) sizeof(block_q8); q += 64) _mm_prefetch((const char *) (a + PF * NB) + q, _MM_HINT_T0);
        for (int k = 0; k < NB; k++)
            for (int j = 0; j < n; j++) acc[j] = _mm256_fmadd_ps(scale(a + k, B + j * NB + k), dot_block(a + k, B + j * NB + k), acc[j]);
        for (int j = 0; j < n; j++) C[j * ROWS + r] = hsum(acc[j]);
    }
}

static void tile_4x2(const block_q8 * A, const block_q8 * B, int n, float * C) {
    for (long r = 0; r < ROWS; r += 4)
        for (int j0 = 0; j0 < n; j0 += 2) {
            __m256 acc[4][2];
            for (int i = 0; i < 4; i++) acc[i][0] = acc[i][1] = _mm256_setzero_ps();
            if (PF && j0 == 0 && r + 4 + PF < ROWS)
                for (int i = 0; i < 4; i++)
                    for (int q = 0; q < NB * (int) sizeof(block_q8); q += 64) _mm_prefetch((const char *) (A + (r + i + PF) * NB) + q, _MM_HINT_T0);
            for (int k = 0; k < NB; k++)
                for (int i = 0; i < 4; i++)
                    for (int j = 0; j < 2 && j0 + j < n; j++) {
                        const block_q8 * a = A + (r + i) * NB + k, * b = B + (j0 + j) * NB + k;
                        acc[i][j] = _mm256_fmadd_ps(scale(a, b), dot_block(a, b), acc[i][j]);
                    }
            for (int i = 0; i < 4; i++)
                for (int j = 0; j < 2 && j0 + j < n; j++) C[(j0 + j) * ROWS + r + i] = hsum(acc[i][j]);
        }
}

int main(void) {
    block_q8 * A = aligned_alloc(64, ((ROWS * NB * sizeof(block_q8)) / 64 + 1) * 64);
    static block_q8 B[8 * NB];
    float * C = malloc(8 * ROWS * sizeof(float));
    if (!A || !C) return 1;
    srand(1);
    for (long i = 0; i < ROWS * NB; i++) { A[i].d = 0x3c00; for (int q = 0; q < 32; q++) A[i].qs[q] = (int8_t) rand(); }
    for (int i = 0; i < 8 * NB; i++) { B[i].d = 0x3c00; for (int q = 0; q < 32; q++) B[i].qs[q] = (int8_t) rand(); }
    const char * names[] = {"per column, 16-row blocks", "one row, all columns", "4 rows x 2 columns"};
    void (*kernels[])(const block_q8 *, const block_q8 *, int, float *) = {per_column, row_all_columns, tile_4x2};
    const int pfs[] = {0, 4, 16};
    printf("| loop order | prefetch (rows ahead) | n = 1 | 2 | 4 | 8 |\n|---|---|---|---|---|---|\n");
    for (int f = 0; f < 3; f++)
        for (int p = 0; p < (f ? 3 : 1); p++) {
            PF = pfs[p];
            printf("| %s | %d |", names[f], PF);
            for (int n = 1; n <= 8; n *= 2) {
                double best = 1e9;
                for (int rep = 0; rep < 7; rep++) { double t = now(); kernels[f](A, B, n, C); t = now() - t; if (t < best) best = t; }
                printf(" %.1f |", best * 1e3);
            }
            printf("\n");
        }
    return (int) C[5] & 1;  /* keeps the products live */
}
