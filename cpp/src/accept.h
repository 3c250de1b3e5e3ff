// Acceptance of a verified draft tree: pure functions of the target's logits and the tree.
#pragma once

#include "sampling.h"
#include "tree.h"

#include <functional>
#include <random>
#include <vector>

namespace pyeagle {

struct accept_result {
    std::vector<int32_t> path;  // node indices root..last accepted; path[0] = 0
    llama_token bonus = -1;     // the token the target produces after the last accepted node
};

// logits(i) -> the target's logits at tree node i ([n_vocab]).
using node_logits = std::function<const float *(int32_t)>;

// Greedy: follow the child whose token is the target's argmax; the argmax where none is = bonus.
accept_result accept_greedy(const draft_tree & t, const node_logits & logits, int32_t n_vocab);

// temperature > 0: sibling-wise rejection sampling with deterministic drafts (q = 1). At the
// current node with target distribution p, try the children best-first: accept child x with
// probability p(x); on rejection set p(x) = 0 and renormalise. All rejected (or a leaf): the bonus
// is drawn from the residual p. The output is distributed exactly as the target's.
// broken_from_depth > 0 is a deliberately wrong rule for tests: among drafts at that depth and
// deeper, no residual (rejected drafts keep their mass, the bonus is drawn from the full p). The
// sampling tests must detect it, at depth 1 and deeper.
accept_result accept_sampled(const draft_tree & t, const node_logits & logits, int32_t n_vocab,
                             const sampling_params & sp, std::mt19937_64 & rng, int32_t broken_from_depth = 0);

}  // namespace pyeagle
