// The blocks a bf16 visit asks for while it computes (the next visit's, `sparge_bf16_block`s): their packed K
// and Vᵀ lines, a few per micro-step, block after block (a visit of several blocks has as many micro-steps
// to spread them over). Included by the bf16 kernel sets after vector_ops.h.

typedef struct {
    const sparge_bf16_block *blocks;
    long count, dim, perCall;
    long block, next, lines;  // the block being asked for, its next line (of 2·lines: K's, then Vᵀ's)
} ahead_plan;

/// Lines of K (and of Vᵀ) of a packed block.
INLINE long ahead_lines(const sparge_bf16_block *block, long dim) {
    return (sparge_bf16_padded_keys(block->keyCount) * dim * 2 + 63) / 64;
}

/// The plan for `count` blocks over `calls` calls of `ahead_some`.
INLINE ahead_plan ahead_spread(const sparge_bf16_block *blocks, long count, long dim, long calls) {
    long total = 0;
    for (long b = 0; b < count; b++) total += 2 * ahead_lines(blocks + b, dim);
    ahead_plan plan = {blocks, count, dim, calls ? (total + calls - 1) / calls : 0, 0, 0,
                       count ? ahead_lines(blocks, dim) : 0};
    return plan;
}

INLINE void ahead_some(ahead_plan *plan) {
    for (long k = 0; k < plan->perCall && plan->block < plan->count; k++) {
        const sparge_bf16_block *b = plan->blocks + plan->block;
        long line = plan->next;
        __builtin_prefetch(line < plan->lines ? (const char *)b->keys + line * 64
                                              : (const char *)b->valuesT + (line - plan->lines) * 64, 0, 3);
        if (++plan->next == 2 * plan->lines) {
            plan->next = 0;
            plan->block++;
            plan->lines = plan->block < plan->count ? ahead_lines(plan->blocks + plan->block, plan->dim) : 0;
        }
    }
}
