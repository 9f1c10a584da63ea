"""MA-FL scheduling and batch/iteration allocation by successive convex approximation (SPEC B).

Over a horizon of H rounds, a *candidate session* i = (device n, model m, start round t) runs
for ``session_rounds[n, m]`` = d rounds and uploads in round u = t + d - 1. The schedule picks
candidates (s_i in {0, 1}); gamma_{n,m} (SGD iterations) and B_{n,m} (batch) size every session
of n on m. The objective is

    J = sum_m phi_m Psi_m + beta_E E_total,  E_total = sum_i s_i (kappa c_m B gamma f_n^2 + E_up),
    Psi_m = G_m / (1 + k_m P_m),  P_m = sum_t pi_{m,t},
    pi_{m,t} = sum_{i in (m,t)} s_i w_i h_i / (A_{m,t} + A0_m),  A_{m,t} = sum_{i in (m,t)} s_i w_i,

Psi_m is our convergence-bound surrogate (the paper's exact bound is not published in the
seed). G_m is the model's current loss gap (a warm model starts lower) and P_m the progress
over the horizon, in effective server steps; the gap shrinks as G / (1 + k P) (the O(1/T) of
SGD), at the rate k_m measured by a probe round. Round t's arrivals for model m are averaged by
data weight (FedAvg over the arrivals), so the round moves the model by their mean effective
steps, discounted by how well their data share A represents the population:

- client sampling / heterogeneity: a share A of the data gives a gradient of quality
  A / (A + A0), with A0 = zeta^2 / (N g^2) (zeta^2 the gradient dissimilarity across the N
  devices, g^2 the squared gradient norm): one round of a lone small device moves the model
  as far as a full round, but in a biased direction;
- mini-batch noise: a step at batch B is worth B / (a B + B_noise) of a full-batch step, with
  the gradient noise scale B_noise = sigma^2 / g^2 and a = 1 - B_noise / D (the finite-population
  factor (1 - B/D) sigma^2 / B);
- local drift: the j-th local step of a session is computed ever farther from the global model
  (and, at a fixed learning rate, ever closer to its noise floor), so gamma steps are worth
  gamma0 log(1 + gamma / gamma0) (gamma0 fitted on the probe round);
- staleness: a session spanning d rounds starts d - 1 server steps behind; its weight is
  w_i = rho_n / (1 + xi (d - 1)), with xi the relative change of the gradient over one server step;
- the devices' own gaps: a device on whose data the model does worse is worth more (loss-aware
  selection, as in Power-of-Choice), so w_i is also multiplied by l_n, the model's loss on n's
  data over its mean loss; training n lowers l_n, so the choice rotates over the devices.

So h_i = gamma0 log(1 + gamma / gamma0) x B / (a B + B_noise), w_i = rho_n l_n / (1 + xi (d - 1)).
J also carries two terms over each device's visits v_{n,m} (its sessions of m in the recent past
and the horizon), both convex in s: the participation term sum phi G rho z / (c + v), which
rewards visiting the devices left out, and the visit-balance term sum lambda phi G rho z
((v - mean_n v) / vbar)^2, which also charges for visiting one device over and over (FedAvg over
data-weighted arrivals is unbiased when a model's devices are visited equally often).
Constraints: one model per device at a time, at most C uploads per round, data, availability,
devices busy with committed sessions, an optional energy budget and an optional minimum number of
sessions per model; the latency of a session (download, gamma x B samples of compute, upload) must
fit its d rounds.

Solution (the SPEC's recipe):
1. S-step: relax s to [0, 1]; with gamma and B at their starting values every session of model m
   is given the model's mean h, so pi_{m,t} = h_m A / (A + A0) is concave in s and the problem
   convex; add the concave penalty mu sum s (1 - s), linearise it at the current point and solve
   (CVXPY); iterate (a majorise-minimise scheme, so the penalised objective never increases);
   round greedily on the exact J.
2. gamma/B step with the schedule fixed: pi is linear in each session's h, and h is concave in
   gamma (B fixed) and in B (gamma fixed); alternate the two convex problems, each solved
   exactly; J never increases.
"""

from fedtempo.alloc.mafl.problem import (
    Candidates,
    Coefficients,
    MaflProblem,
    TaskTerms,
    balance,
    batch_factor,
    candidates,
    coefficients,
    drift_peak,
    effective_steps,
    objective,
    participation,
    visit_work,
)
from fedtempo.alloc.mafl.rounding import round_greedy
from fedtempo.alloc.mafl.sca import (
    START_GRID,
    Plan,
    plan,
    relax_schedule,
    size_sessions,
    starting_iterations,
)

__all__ = [
    "START_GRID",
    "Candidates",
    "Coefficients",
    "MaflProblem",
    "Plan",
    "TaskTerms",
    "balance",
    "batch_factor",
    "candidates",
    "coefficients",
    "drift_peak",
    "effective_steps",
    "objective",
    "participation",
    "plan",
    "relax_schedule",
    "round_greedy",
    "size_sessions",
    "starting_iterations",
    "visit_work",
]
