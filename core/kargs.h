/* kargs.h: the typed parameters of each kernel family (part of the kernel boundary, included by
 * kernel.h). A launch carries one of them in gm_kparams; a kernel reads the member of its family
 * (a->k.pw.op), a rule fills it where it calls gm_run (&(gm_kparams){.pw = {...}}). Plain types
 * only. Operands travel as views (gm_kargs in/out); these are the scalars beside them. */
#ifndef GM_KARGS_H
#define GM_KARGS_H

#include <stdbool.h>
#include <stdint.h>

/* PW_BINARY, PW_UNARY, PW_UNARY_BWD, PW_BINARY_BWD, PW_WHERE: one kernel serves a family of
 * element functions, chosen by op id. */
typedef struct gm_pw_args {
    int op;           /* GM_OP_<ID> of the element function */
    const char *name; /* the op's name, for the kernel's messages */
    int wrt;          /* PW_BINARY_BWD: 0 d/dx, 1 d/dy */
    double lo, hi;    /* CLAMP bounds (-inf / +inf when absent) */
} gm_pw_args;

/* FILL: every element = value; SCALE: every element *= value. */
typedef struct gm_value_args {
    double value;
} gm_value_args;

/* RAND: uniform in [a, b), normal(mean a, std b) or integers in [a, b), from the Philox stream
 * (seed, first counter offset). */
typedef struct gm_rand_args {
    int kind; /* gm_rand_kind */
    uint64_t seed, offset;
    double a, b;
} gm_rand_args;

/* SUM, VAR, LOGSUMEXP, MAXMIN, MAXMIN_BACKWARD: the reduced dims of the input (of the output
 * for MAXMIN_BACKWARD) as a bit mask. */
typedef struct gm_reduce_args {
    uint64_t mask;
    double scale; /* SUM: multiplies the sums (1 / count for a mean); VAR: the divisor */
    bool min;     /* MAXMIN: min instead of max */
} gm_reduce_args;

/* Kernels along one dim: SOFTMAX(_BACKWARD), CUMSUM, GATHER, SCATTER_ADD, INDEX_SELECT,
 * INDEX_ADD. */
typedef struct gm_dim_args {
    int dim;
    bool flag; /* SOFTMAX: log_softmax; CUMSUM: reverse */
} gm_dim_args;

/* TOPK: the k largest (or smallest) along dim, sorted or in index order. */
typedef struct gm_topk_args {
    int dim;
    int64_t k;
    bool largest, sorted;
} gm_topk_args;

/* ONE_HOT: n classes. */
typedef struct gm_one_hot_args {
    int64_t n;
} gm_one_hot_args;

/* The loss family: forward kernels read reduction (and cross-entropy ignore_index and label
 * smoothing); backward kernels the scale of g (1/count for a mean) and which gradients to
 * write (bits in the order of the inputs: 1 the first, 2 the second, 4 the third). */
typedef struct gm_loss_args {
    int reduction; /* GM_RED_MEAN / GM_RED_SUM / GM_RED_NONE */
    int64_t ignore_index;
    double smoothing;
    double scale;
    unsigned outs;
} gm_loss_args;

/* MOE_ROUTE: E experts, at most capacity rows each (-1: dropless). */
typedef struct gm_route_args {
    int64_t experts, capacity;
} gm_route_args;

/* EXPERT_MM: out_e = xs_e w[e], or xs_e w[e]^T when transpose_w. */
typedef struct gm_expert_mm_args {
    bool transpose_w;
} gm_expert_mm_args;

/* LAYER_NORM, RMS_NORM and their backward: rows of n elements; backward writes the gradients
 * in outs (1 dx, 2 dw, 4 db), in that order. */
typedef struct gm_norm_args {
    int64_t rows, n;
    double eps;
    unsigned outs;
} gm_norm_args;

/* BATCH_NORM(_BWD): x [n, c, s] (s the product of the trailing dims), eps; the backward writes
 * the gradients in outs (1 dx, 2 dw, 4 db), in that order, and reads those reaching mean and
 * invstd where given has bit 1, 2. */
typedef struct gm_batch_norm_args {
    int64_t n, c, s;
    double eps;
    unsigned outs, given;
} gm_batch_norm_args;

/* CONV2D and its gradients: stride and padding (the window is w's last two dims); pooling: the
 * window (kh, kw) too. */
typedef struct gm_conv_args {
    int64_t kh, kw, sh, sw, ph, pw;
} gm_conv_args;

/* SDPA, SDPA_BWD: causal masking and the logit scale. */
typedef struct gm_sdpa_args {
    bool causal;
    double scale;
} gm_sdpa_args;

/* GLA(_BWD), GLA_CHUNK(_BWD): the scale of q k^T; the chunked forms' chunk and sub-chunk sizes. */
typedef struct gm_gla_args {
    double scale;
    int64_t chunk, sub;
} gm_gla_args;

/* GATE_SELECT(_BWD): the selection rule and its parameter; backward reads renormalize and which
 * output gradients were given (1 weights, 2 probs). */
typedef struct gm_gate_args {
    int rule; /* 0 top-k, 1 top-p, 2 threshold */
    int64_t k;
    bool renormalize;
    double p; /* top-p mass or threshold */
    unsigned given;
} gm_gate_args;

/* The tree gates: SMOOTH_STEP(_BWD) read gamma; DSELECT_K(_BWD) and COMET_GATE(_BWD) rows n,
 * selectors k, bits m (DSelect-k) and experts; SINKHORN(_BWD) batches n of size x size and
 * iters. */
typedef struct gm_tree_args {
    double gamma;
    int64_t n, k, m, experts;
    int64_t size, iters;
} gm_tree_args;

/* SGD_STEP and ADAM_STEP over a parameter group (the launch's list of views). */
typedef struct gm_optim_args {
    double lr, momentum, dampening, weight_decay;
    bool nesterov, first;  /* SGD: the momentum buffer starts as a copy of the first gradient */
    double beta1, beta2, eps;
    double bias1, bias2;   /* Adam: 1 - beta1^step, 1 - beta2^step */
    bool decoupled;        /* AdamW */
} gm_optim_args;

/* GAUSSIAN_MOE_EVAL: the gate of the 1-D-covariate Gaussian mixture of experts (gm.h,
 * gm_gaussian_moe_eval), K of the top-K gate, what to compute (1 the NLL, 2 + its gradient,
 * 3 + the mean outer product of the scores). */
typedef enum {
    GM_MOE_SOFTMAX = 0, GM_MOE_TEMPERATURE, GM_MOE_TANH, GM_MOE_SIGMOID, GM_MOE_TOPK
} gm_moe_gate;

/* Experts at most (the checks in core/moe_lik.c; the CPU kernel's per-point arrays are this size). */
#define GM_MOE_MAX_K 16

typedef struct gm_moe_lik_args {
    int gate; /* gm_moe_gate */
    int K, what;
} gm_moe_lik_args;

/* The scalars of one launch: the member of the kernel's family. */
typedef union gm_kparams {
    gm_pw_args pw;
    gm_value_args value;
    gm_rand_args rand;
    gm_reduce_args reduce;
    gm_dim_args dim;
    gm_topk_args topk;
    gm_one_hot_args one_hot;
    gm_loss_args loss;
    gm_route_args route;
    gm_expert_mm_args expert_mm;
    gm_norm_args norm;
    gm_batch_norm_args batch_norm;
    gm_conv_args conv;
    gm_sdpa_args sdpa;
    gm_gla_args gla;
    gm_gate_args gate;
    gm_tree_args tree;
    gm_optim_args optim;
    gm_moe_lik_args moe_lik;
} gm_kparams;

#endif
