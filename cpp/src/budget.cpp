#include "budget.h"

#include <algorithm>
#include <cmath>

namespace pyeagle {

namespace {
constexpr double ema = 0.1;  // weight of one new observation in the running cost estimates
}  // namespace

// --- cost_model ---------------------------------------------------------------------------------

void cost_model::set_curve(std::vector<std::pair<int32_t, double>> grid, int32_t n_past, int32_t n_covered) {
    grid_ = std::move(grid);
    level_ = 1.0;
    measured_at_ = n_past;
    n_covered_ = std::max(n_covered, grid_.empty() ? 0 : grid_.back().first);
}

std::vector<std::pair<int32_t, double>> cost_model::grid() const {
    std::vector<std::pair<int32_t, double>> out(grid_);
    for (auto & point : out) point.second *= level_;
    return out;
}

// The curve is not smooth: ggml's CPU kernels take rows in blocks of 4 (a batch of 8 can cost less
// than one of 7), so n between grid points costs what the next grid point costs (the grid is dense
// where that matters; beyond it a batch is charged as if rounded up).
size_t cost_model::at_or_above(int32_t n) const {
    size_t i = 0;
    while (i + 1 < grid_.size() && grid_[i].first < n) ++i;
    return i;
}

double cost_model::verify(int32_t n) const {
    if (grid_.empty()) return 0;
    const auto & g = grid_[at_or_above(n)];
    return level_ * (n <= g.first ? g.second : g.second * n / g.first);  // beyond the grid: proportional
}

void cost_model::observe_verify(int32_t n, double seconds) {
    if (grid_.empty() || seconds <= 0) return;
    const size_t i = at_or_above(n);
    if (grid_[i].first != n) return;  // only passes of a measured size inform the curve
    // one slow pass (the machine busy for a moment) moves it by at most ema
    const double r = std::clamp(seconds / (level_ * grid_[i].second), 0.5, 2.0);
    // the smallest size sets the level of all (its own point is the reference and stays); a larger
    // size corrects its own point's shape against that level
    (i == 0 ? level_ : grid_[i].second) *= 1 + ema * (r - 1);
}

void cost_model::rescale(const std::vector<std::pair<int32_t, double>> & anchors, int32_t n_past) {
    if (grid_.empty() || anchors.empty()) return;
    std::vector<std::pair<int32_t, double>> ratio;  // (n, now / the estimate before)
    for (const auto & [n, s] : anchors) {
        const double before = verify(n);
        if (before > 0 && s > 0) ratio.emplace_back(n, s / before);
    }
    if (ratio.empty()) return;
    auto factor = [&](int32_t n) {
        if (n <= ratio.front().first) return ratio.front().second;
        for (size_t i = 1; i < ratio.size(); ++i) {
            const auto & [n1, r1] = ratio[i];
            if (n <= n1) {
                const auto & [n0, r0] = ratio[i - 1];
                return r0 + (r1 - r0) * (n - n0) / std::max(1, n1 - n0);
            }
        }
        return ratio.back().second;
    };
    for (auto & [n, s] : grid_) s = level_ * s * factor(n);
    level_ = 1.0;
    measured_at_ = n_past;
}

void cost_model::observe_probe(double seconds) {
    probe_ = probe_ > 0 ? probe_ + ema * (seconds - probe_) : seconds;
}

double cost_model::step(int32_t n_rows) const {
    n_rows = std::clamp(n_rows, 1, (int32_t) step_.size() - 1);
    if (step_[n_rows] > 0) return step_[n_rows];
    // nearest row count seen, scaled by rows + 1 (a fixed part, then per row)
    for (int32_t d = 1; d < (int32_t) step_.size(); ++d) {
        for (int32_t m : {n_rows - d, n_rows + d}) {
            if (m >= 1 && m < (int32_t) step_.size() && step_[m] > 0) return step_[m] * (n_rows + 1) / (m + 1);
        }
    }
    return probe_;  // no expansion step seen yet: about one probe
}

void cost_model::observe_step(int32_t n_rows, double seconds) {
    n_rows = std::clamp(n_rows, 1, (int32_t) step_.size() - 1);
    double & s = step_[n_rows];
    s = s > 0 ? s + ema * (seconds - s) : seconds;
}

// --- acceptance ---------------------------------------------------------------------------------

int32_t acceptance::q_bucket(double q) { return std::clamp((int32_t) (q * n_q), 0, n_q - 1); }

int32_t acceptance::match_bucket(int32_t n_match) {
    if (n_match <= 4) return std::max(n_match, 1) - 1;
    return n_match < 8 ? 4 : n_match < 16 ? 5 : n_match < 32 ? 6 : n_match < 64 ? 7 : n_match < 128 ? 8 : 9;
}

double acceptance::head(int32_t depth, double q) const {
    return head_[std::clamp(depth, 1, n_depth) - 1][q_bucket(q)].p(q, 3.0);
}

void acceptance::count_head(int32_t depth, double q, bool hit) {
    head_[std::clamp(depth, 1, n_depth) - 1][q_bucket(q)].add(hit);
}

// Priors (worth two tries each) until this engine has measured: inside a repeat copies are usually
// right; outside one, the longer the match the likelier. A match in an earlier output is weaker
// evidence than one in this context (phrases recur across answers less than within one).
double acceptance::lookup_first(int32_t n_match, bool streak, bool stored) const {
    const int32_t b = match_bucket(n_match);
    const double prior = streak ? 0.7 : std::min(0.15 + 0.08 * b, 0.7);
    return first_[stored][b][streak].p(stored ? 0.5 * prior : prior);
}

double acceptance::lookup_next(int32_t n_match, bool streak, bool stored) const {
    return next_[stored][match_bucket(n_match)][streak].p(streak ? 0.9 : 0.7);
}

void acceptance::count_lookup(int32_t n_match, bool streak, int32_t step, bool hit, bool stored) {
    const int32_t b = match_bucket(n_match);
    (step == 0 ? first_[stored][b][streak] : next_[stored][b][streak]).add(hit);
}

// --- decisions ----------------------------------------------------------------------------------

void throughput::add(int32_t tokens, double seconds) {
    constexpr double w = 0.05;  // about the last 20 rounds
    tokens_ += w * (tokens - tokens_);
    seconds_ += w * (seconds - seconds_);
}

size_choice best_size(const std::vector<double> & a_desc, double sunk, const cost_model & cost, int32_t m_max,
                      double rate) {
    size_choice best{0, 1.0, sunk + cost.verify(1)};
    double expect = 1.0;
    const int32_t n = std::min<int32_t>((int32_t) a_desc.size(), m_max);
    for (int32_t m = 1; m <= n; ++m) {
        expect += a_desc[m - 1];
        const size_choice c{m, expect, sunk + cost.verify(m + 1)};
        if (c.value(rate) > best.value(rate)) best = c;
    }
    return best;
}

bool head_gate::run(bool lookup_pays) {
    exploring_ = false;
    if (gain_[lookup_pays] > 0) return true;
    if (++skipped_[lookup_pays] < explore_[lookup_pays]) return false;
    skipped_[lookup_pays] = 0;
    exploring_ = true;
    return true;
}

void head_gate::begin(bool lookup_pays, double alone_value, double rate) {
    open_ = true;
    lookup_pays_ = lookup_pays;
    alone_value_ = alone_value;
    rate_ = rate;
}

void head_gate::end(int32_t tokens, double seconds) {
    if (!open_) return;
    open_ = false;
    const double gain = tokens - rate_ * seconds - alone_value_;
    gain_[lookup_pays_] += 0.2 * (gain - gain_[lookup_pays_]);
    int32_t & e = explore_[lookup_pays_];
    if (gain_[lookup_pays_] > 0) e = explore_min;
    else if (exploring_) e = std::min(2 * e, explore_max);
}

}  // namespace pyeagle
