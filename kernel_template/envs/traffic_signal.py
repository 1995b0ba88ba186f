"""One signalised intersection with a cell-transmission model (CTM) on each approach.

Flow model. Each movement (a lane group: the through lanes of an approach, plus a left
bay when `protected_lefts=True`) is a link of `n_cells` cells. Vehicles are fluid: each
1 s tick a cell sends min(v*dt/L * n, Q*dt) and receives min(Q*dt, w*dt/L * (N_jam - n))
(Daganzo's CTM, trapezoidal fundamental diagram). Arrivals (Poisson or binomial per tick,
integer vehicles, rate from a demand profile over the hour) join an entry backlog that
feeds the first cell as fast as it can receive. The stop line discharges at saturation
flow only while its movement shows green; yellow and all-red are lost time.

Signal. Phases are sets of non-conflicting movements: 0 = N/S through, 1 = E/W through
(with protected lefts: 0 = N/S through, 1 = N/S left, 2 = E/W through, 3 = E/W left).
Every `decision_s` (15 s) the agent picks the phase it wants next (Discrete(n_phases));
picking the current phase keeps it. A change runs yellow then all-red, and never starts
before the current green has lasted `min_green_s` (the request waits, then switches
inside the same interval).

Observation (float32, all in [0, 1]), in this order (see `ObservationLayout`):
  queue      per movement, q / (q + storage) where storage = vehicles the link holds jammed
  density    per movement and cell, n / N_jam (stop-line cell last)
  phase      one-hot of the current green phase (the target phase during a change)
  time in phase   green seconds / 120, clipped
  time of day     elapsed / episode length

Queue: a vehicle counts as queued to the extent the CTM holds it back, i.e. per cell
n - (flow the cell can send now) * L/(v*dt), plus the whole entry backlog. It is the
delay rate: integrating it over time gives `delay` (vehicle-seconds beyond free-flow
travel time).

Info per step: `queue` (vehicles queued now), `delay` (vehicle-seconds of delay during
this decision), `throughput` (vehicles discharged this decision), `phase` (as in the
observation) and `switches` (phase changes started this decision).

Reward per decision: -queue_weight * (queue_now - queue_before) - delay_weight * delay
- switch_penalty * (number of phase changes started); defaults 0.1, 0.002, 0.05.
The queue-change term alone telescopes to -(final queue) over an episode, which a
short DQN run learned to game (fewer switches, worse delay than fixed time); the small
delay term ties the return to the hour's total delay. `delay_weight=0` gives the pure
queue-change reward. Episodes last `episode_s` (240 decisions) and end with
`truncated=True`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from kernel_template.envs.demand import DEFAULT_BASE_FLOWS_VPH, DEFAULT_PROFILE, arrival_rates

APPROACHES = ("N", "E", "S", "W")
TIME_IN_PHASE_NORM_S = 120.0

_GREEN, _YELLOW, _ALL_RED = 0, 1, 2
# The signal's state that `_advance_signal` moves: a schedule is simulated on it, then put back.
_SIGNAL_STATE = ("_stage", "_stage_elapsed", "green_elapsed", "phase", "target_phase", "_signal")
# Light codes reported per movement and tick by `lights_of_last_decision`.
RED, YELLOW, GREEN = 0, 1, 2


_INT_TYPES = (int, np.int64, np.int32, np.intp)
_add_reduce = np.add.reduce  # ndarray.sum without its Python wrapper: the same reduction


@dataclass(frozen=True)
class _Schedule:
    """One decision's signal states per tick, replayed from `_signal_schedule`'s cache."""

    signals: tuple[int, ...]
    switches: int
    stage: int
    stage_elapsed: int  # the final value, or what to add when `stage_elapsed_relative`
    stage_elapsed_relative: bool
    green_elapsed: int  # likewise
    green_elapsed_relative: bool
    phase: int
    caps: list  # per tick: min(send cap, receiving cap) of its signal state


@dataclass(frozen=True)
class TrafficConfig:
    """Everything `TrafficSignalEnv(**env_kwargs)` accepts; units in the names."""

    # Timing.
    tick_s: float = 1.0
    decision_s: float = 15.0
    episode_s: float = 3600.0
    min_green_s: float = 10.0
    yellow_s: float = 3.0
    all_red_s: float = 2.0
    # Geometry and traffic flow (per lane; a link has `lanes` of them).
    n_cells: int = 8
    cell_length_m: float = 50.0
    free_flow_speed_mps: float = 13.9
    wave_speed_mps: float = 6.0
    jam_density_vpm: float = 1 / 7.5
    saturation_flow_vphpl: float = 1800.0
    through_lanes: int = 2
    # Demand.
    base_flows_vph: tuple[float, ...] = DEFAULT_BASE_FLOWS_VPH
    demand_profile: tuple[float, ...] = DEFAULT_PROFILE
    demand_jitter: float = 0.2  # each episode scales each approach by U(1-j, 1+j)
    arrivals: str = "poisson"  # or "binomial" (at most one vehicle per lane per tick)
    protected_lefts: bool = False
    left_turn_share: float = 0.15
    left_lanes: int = 1
    # Reward.
    queue_weight: float = 0.1
    delay_weight: float = 0.002  # see the module doc: the queue change alone telescopes
    switch_penalty: float = 0.05
    extra: dict = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in ("base_flows_vph", "demand_profile"):
            object.__setattr__(self, name, tuple(float(x) for x in getattr(self, name)))
        problems = list(self._problems())
        if problems:
            raise ValueError(f"traffic env kwargs: {problems[0]}")

    def _problems(self):
        tick = self.tick_s
        if tick <= 0:
            yield f"tick_s={tick} must be > 0"
            return
        for name in ("decision_s", "episode_s", "min_green_s", "yellow_s", "all_red_s"):
            value = getattr(self, name)
            if value < 0 or abs(value / tick - round(value / tick)) > 1e-9:
                yield f"{name}={value} must be a non-negative multiple of tick_s={tick}"
        if self.decision_s <= 0 or self.yellow_s <= 0:
            yield "decision_s and yellow_s must be > 0"
        if self.episode_s < self.decision_s or abs(
            self.episode_s / self.decision_s - round(self.episode_s / self.decision_s)
        ):
            yield f"episode_s={self.episode_s} must be a whole number of decision_s={self.decision_s}"
        if self.free_flow_speed_mps * tick > self.cell_length_m:
            yield "free_flow_speed_mps * tick_s must not exceed cell_length_m (CFL condition)"
        if self.wave_speed_mps * tick > self.cell_length_m:
            yield "wave_speed_mps * tick_s must not exceed cell_length_m (CFL condition)"
        if min(self.n_cells, self.through_lanes, self.left_lanes) < 1:
            yield "n_cells, through_lanes and left_lanes must be >= 1"
        if len(self.base_flows_vph) != 4 or min(self.base_flows_vph) < 0:
            yield f"base_flows_vph must be 4 flows >= 0 (N, E, S, W), got {self.base_flows_vph}"
        if not 0 <= self.demand_jitter < 1:
            yield f"demand_jitter={self.demand_jitter} must be in [0, 1)"
        if self.arrivals not in ("poisson", "binomial"):
            yield f"arrivals={self.arrivals!r} must be 'poisson' or 'binomial'"
        if not 0 <= self.left_turn_share < 1:
            yield f"left_turn_share={self.left_turn_share} must be in [0, 1)"
        if min(self.jam_density_vpm, self.saturation_flow_vphpl, self.free_flow_speed_mps) <= 0:
            yield "jam_density_vpm, saturation_flow_vphpl and free_flow_speed_mps must be > 0"
        if self.extra:
            valid = ", ".join(f.name for f in fields(self) if f.name != "extra")
            yield f"unknown option(s) {sorted(self.extra)}; valid options: {valid}"

    @classmethod
    def from_kwargs(cls, **kwargs) -> TrafficConfig:
        known = {f.name for f in fields(cls)} - {"extra"}
        extra = {k: v for k, v in kwargs.items() if k not in known}
        return cls(**{k: v for k, v in kwargs.items() if k in known}, extra=extra)

    def ticks(self, seconds: float) -> int:
        return int(round(seconds / self.tick_s))


@dataclass(frozen=True)
class ObservationLayout:
    """Where each part of the observation vector lives."""

    n_movements: int
    n_cells: int
    n_phases: int

    @property
    def queue(self) -> slice:
        return slice(0, self.n_movements)

    @property
    def density(self) -> slice:
        start = self.n_movements
        return slice(start, start + self.n_movements * self.n_cells)

    @property
    def phase(self) -> slice:
        start = self.density.stop
        return slice(start, start + self.n_phases)

    @property
    def time_in_phase(self) -> int:
        return self.phase.stop

    @property
    def time_of_day(self) -> int:
        return self.phase.stop + 1

    @property
    def size(self) -> int:
        return self.phase.stop + 2


def movement_names(protected_lefts: bool) -> list[str]:
    names = [f"{a}_through" for a in APPROACHES]
    return names + [f"{a}_left" for a in APPROACHES] if protected_lefts else names


def phase_table(protected_lefts: bool) -> np.ndarray:
    """Boolean (n_phases, n_movements): which movements each phase gives green."""
    if not protected_lefts:
        return np.array([[1, 0, 1, 0], [0, 1, 0, 1]], dtype=bool)
    return np.array(
        [
            [1, 0, 1, 0, 0, 0, 0, 0],  # N/S through
            [0, 0, 0, 0, 1, 0, 1, 0],  # N/S protected left
            [0, 1, 0, 1, 0, 0, 0, 0],  # E/W through
            [0, 0, 0, 0, 0, 1, 0, 1],  # E/W protected left
        ],
        dtype=bool,
    )


def default_layout(**env_kwargs) -> ObservationLayout:
    config = TrafficConfig.from_kwargs(**env_kwargs)
    n_movements = 8 if config.protected_lefts else 4
    return ObservationLayout(n_movements, config.n_cells, 4 if config.protected_lefts else 2)


class TrafficSignalEnv(gym.Env):
    """Gymnasium env `orchestrate/TrafficSignal-v0`; kwargs are `TrafficConfig` fields."""

    metadata = {"render_modes": ["ansi"], "render_fps": 4}

    def __init__(self, render_mode: str | None = None, **env_kwargs) -> None:
        if render_mode not in (None, "ansi"):
            raise ValueError(f"render_mode={render_mode!r} is not supported; use None or 'ansi'")
        self.render_mode = render_mode
        self.config = config = TrafficConfig.from_kwargs(**env_kwargs)
        self.movements = movement_names(config.protected_lefts)
        self.phase_movements = phase_table(config.protected_lefts)
        self.n_phases, n_mov = self.phase_movements.shape
        self.layout = ObservationLayout(n_mov, config.n_cells, self.n_phases)

        self.ticks_per_decision = config.ticks(config.decision_s)
        self.decisions_per_episode = config.ticks(config.episode_s) // self.ticks_per_decision
        self._min_green = config.ticks(config.min_green_s)
        self._yellow = config.ticks(config.yellow_s)
        self._all_red = config.ticks(config.all_red_s)

        self._build_link_tables(config, n_mov)
        self._started = False
        self.action_space = spaces.Discrete(self.n_phases)
        self.observation_space = spaces.Box(0.0, 1.0, shape=(self.layout.size,), dtype=np.float32)
        self._reset_state(np.ones(n_mov))

    # -- construction -------------------------------------------------------------
    def _build_link_tables(self, config: TrafficConfig, n_mov: int) -> None:
        """CTM constants over one flat state vector (contiguous slices keep numpy fast).

        Each movement owns a block of `n_cells + 2` slots: [entry backlog, cells..., sink].
        `flow[j]` moves vehicles from slot j to slot j + 1; a sink never sends, so nothing
        crosses into the next movement's block, and it accumulates the discharged vehicles.
        """
        dt, cells = config.tick_s, config.n_cells
        block = cells + 2
        lanes = np.array(
            [config.through_lanes] * 4 + [config.left_lanes] * (n_mov - 4), dtype=np.float64
        )
        lane_cap = config.saturation_flow_vphpl / 3600.0 * dt  # vehicles per lane per tick
        cell_jam = lanes * config.jam_density_vpm * config.cell_length_m
        self._lanes = lanes
        self._block = block
        self.storage = cell_jam * cells  # vehicles a jammed link holds

        def per_slot(backlog, cell, sink):
            column = np.asarray(cell, dtype=np.float64).reshape(-1, 1)
            table = np.broadcast_to(column, (n_mov, block)).copy()
            table[:, 0] = backlog
            table[:, -1] = sink
            return table

        fwd = per_slot(1.0, config.free_flow_speed_mps * dt / config.cell_length_m, 0.0)
        send_cap = per_slot(np.inf, lanes * lane_cap, 0.0)
        jam = per_slot(np.inf, cell_jam, np.inf)
        back = per_slot(1.0, config.wave_speed_mps * dt / config.cell_length_m, 1.0)
        recv_cap = per_slot(np.inf, lanes * lane_cap, 0.0)
        # For the slot before j + 1: receiving capacity is that of slot j + 1.
        self._fwd = fwd.ravel()[:-1]
        self._send_cap = send_cap.ravel()[:-1]
        self._jam_next = jam.ravel()[1:]
        self._back_next = back.ravel()[1:]
        recv_cap_next = recv_cap.ravel()[1:]
        self._cell_slots = (np.arange(n_mov)[:, None] * block + np.arange(1, cells + 1)).ravel()
        self._backlog_slots = np.arange(n_mov) * block
        self._sink_slots = self._backlog_slots + block - 1
        self._stop_line_slots = self._sink_slots - 1  # last cell: its flow is the discharge
        self._inv_fwd_cells = 1.0 / self._fwd[self._cell_slots]
        self._inv_jam_cells = 1.0 / jam.ravel()[self._cell_slots]
        self._travel_s = config.cell_length_m / config.free_flow_speed_mps

        # Receiving capacity per signal state (greens 0..P-1, yellows P..2P-1, all-red 2P):
        # at the stop line it is the saturation flow while green, else 0.
        n_states = 2 * self.n_phases + 1
        exit_cap = np.zeros((n_states, n_mov))
        exit_cap[: self.n_phases] = self.phase_movements * (lanes * lane_cap)
        self._recv_cap = np.repeat(recv_cap_next[None, :], n_states, 0)
        self._recv_cap[:, self._stop_line_slots] = exit_cap
        self._lights = np.zeros((n_states, n_mov), dtype=np.int8)
        self._lights[: self.n_phases] = self.phase_movements * GREEN
        self._lights[self.n_phases : 2 * self.n_phases] = self.phase_movements * YELLOW

        # min(send_cap, receiving cap) per signal state: min is exact, so folding the two
        # caps into one table (one op per tick fewer) leaves every flow bit for bit the same.
        self._cap = np.minimum(self._send_cap[None, :], self._recv_cap)
        self._n_mov = n_mov
        self._n_cells = cells
        # The same constants as (movements, cells) tables, for the per-decision queue and
        # observation work on views of the state.
        as_cells = (n_mov, cells)
        cell_slots = self._cell_slots
        self._fwd_cells = self._fwd[cell_slots].reshape(as_cells)
        self._jam_next_cells = self._jam_next[cell_slots].reshape(as_cells)
        self._back_next_cells = self._back_next[cell_slots].reshape(as_cells)
        self._cap_cells = self._cap[:, cell_slots].reshape(-1, *as_cells)
        self._inv_fwd_cells2d = self._inv_fwd_cells.reshape(as_cells)
        self._inv_jam_cells2d = self._inv_jam_cells.reshape(as_cells)
        layout = self.layout
        self._obs_size = layout.size
        self._obs_queue = layout.queue
        self._obs_density = layout.density
        self._obs_phase = layout.phase
        self._obs_phase_start = layout.phase.start
        self._obs_time_in_phase = layout.time_in_phase
        self._obs_time_of_day = layout.time_of_day

        size = n_mov * block
        self._send = np.empty(size - 1)
        self._recv = np.empty(size - 1)
        self._flows = np.empty((self.ticks_per_decision, size - 1))
        # Signal schedules seen so far (see `_signal_schedule`): a handful of keys per config.
        self._schedules: dict[tuple, _Schedule] = {}
        flows = np.asarray(config.base_flows_vph)
        if config.protected_lefts:
            flows = np.concatenate(
                [flows * (1 - config.left_turn_share), flows * config.left_turn_share]
            )
        self._base_flows = flows

    def _reset_state(self, jitter: np.ndarray) -> None:
        config = self.config
        n_mov = len(self.movements)
        rates = arrival_rates(
            self._base_flows * jitter,
            config.demand_profile,
            config.ticks(config.episode_s),
            config.tick_s,
        )
        # The whole episode's arrivals at once: one generator call instead of 240.
        if config.arrivals == "binomial":
            trials = np.broadcast_to(self._lanes.astype(np.int64), rates.shape)
            arrivals = self.np_random.binomial(trials, np.minimum(rates / self._lanes, 1.0))
        else:
            arrivals = self.np_random.poisson(rates) if self._started else np.zeros(rates.shape)
        self._arrivals = arrivals.astype(np.int16)
        # As float, added to the entry backlogs tick by tick; and the per-tick totals.
        self._arrivals_f = self._arrivals.astype(np.float64)
        self._arrived_per_tick = self._arrivals.sum(axis=1)
        self._state = np.zeros(n_mov * self._block)
        self.phase = 0  # green phase shown, or the one being cleared during a change
        self.target_phase = 0
        self._stage = _GREEN
        self._stage_elapsed = 0
        self.green_elapsed = self._min_green  # free to switch at the first decision
        self._signal = 0
        self.decision = 0
        self.total_arrived = 0.0
        self._queues = np.zeros(n_mov)
        self._queue_total = 0.0
        self._last_signals: list[int] = []

    # -- gymnasium API ----------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self._started = True
        spread = self.config.demand_jitter
        jitter = self.np_random.uniform(1 - spread, 1 + spread, size=4)
        if self.config.protected_lefts:
            jitter = np.concatenate([jitter, jitter])
        self._reset_state(jitter)
        return self._observation(), {"queue": 0.0, "phase": 0}

    def step(self, action):
        if not (type(action) in _INT_TYPES and 0 <= action < self.n_phases) and (
            not self.action_space.contains(action)
        ):
            raise ValueError(f"action {action!r} is not in {self.action_space}")
        if not 0 <= self.decision < self.decisions_per_episode or not self._started:
            raise RuntimeError("the episode is over or never started; call reset() before step()")
        self.target_phase = int(action)
        ticks = self.ticks_per_decision
        t0 = self.decision * ticks
        queue_before = self._queue_total
        schedule = self._signal_schedule()

        x, send, recv, flows = self._state, self._send, self._recv, self._flows
        x_from, x_to = x[:-1], x[1:]
        backlogs = x[:: self._block]  # entry backlogs: a strided view, one per movement
        fwd, jam_next, back_next = self._fwd, self._jam_next, self._back_next
        multiply, subtract, minimum, add = np.multiply, np.subtract, np.minimum, np.add
        in_network = _add_reduce(x) - _add_reduce(x[self._sink_slots])
        # One CTM tick: send = min(v n, Q), receive = min(w (N - n), Q) (both caps folded
        # into `cap`), flow = min(send, receive). Adding arrivals only to the backlog
        # slots is the same as adding a row that is zero elsewhere (x + 0.0 == x).
        for arrivals_t, cap, flow in zip(
            self._arrivals_f[t0 : t0 + ticks], schedule.caps, flows, strict=True
        ):
            add(backlogs, arrivals_t, backlogs)
            multiply(x_from, fwd, send)
            subtract(jam_next, x_to, recv)
            multiply(recv, back_next, recv)
            minimum(send, recv, out=flow)
            minimum(flow, cap, out=flow)
            subtract(x_from, flow, x_from)
            add(x_to, flow, x_to)

        dt = self.config.tick_s
        discharged = _add_reduce(flows[:, self._stop_line_slots], axis=1)
        arrived = self._arrived_per_tick[t0 : t0 + ticks]
        # Vehicles in the network at the start of each tick, before its arrivals.
        net_change = np.add.accumulate(arrived - discharged)
        vehicle_ticks = ticks * in_network + _add_reduce(net_change[:-1])
        # Delay: time spent minus the free-flow travel time of the cell-to-cell moves made.
        moved_from_cells = _add_reduce(flows[:, self._cell_slots], axis=None)
        delay = float(dt * vehicle_ticks - self._travel_s * moved_from_cells)
        throughput = float(_add_reduce(discharged))
        self.total_arrived += float(_add_reduce(arrived))
        self.decision += 1
        self._update_queues()

        config = self.config
        switches = schedule.switches
        reward = (
            -config.queue_weight * (self._queue_total - queue_before)
            - config.delay_weight * delay
            - config.switch_penalty * switches
        )
        truncated = self.decision >= self.decisions_per_episode
        info = {
            "queue": self._queue_total,
            "delay": delay,
            "throughput": throughput,
            "phase": self.current_phase,
            "switches": switches,
        }
        return self._observation(), float(reward), False, truncated, info

    def render(self):
        if self.render_mode != "ansi":
            return None
        rows = [f"t={self.decision * self.config.decision_s:.0f}s phase={self.current_phase}"]
        for name, queue, cells in zip(self.movements, self._queues, self.vehicles, strict=True):
            rows.append(
                f"{name:>10} queue={queue:6.1f} backlog={cells[0]:6.1f} cells={np.round(cells[1:], 1)}"
            )
        return "\n".join(rows)

    # -- internals --------------------------------------------------------------
    def _signal_schedule(self) -> _Schedule:
        """Advance the signal over this decision; its ticks' signal states and changes.

        The outcome depends only on the stage, the time in a yellow/all-red stage, the green
        time up to `min_green` (only `>= min_green` is ever asked), the phase and the target:
        each such key is simulated once with `_advance_signal` and replayed after.
        """
        stage = self._stage
        key = (
            stage,
            self._stage_elapsed if stage != _GREEN else 0,
            min(self.green_elapsed, self._min_green),
            self.phase,
            self.target_phase,
        )
        schedule = self._schedules.get(key)
        if schedule is None:
            schedule = self._schedules[key] = self._simulate_schedule(key)
        self._stage = schedule.stage
        self._stage_elapsed = schedule.stage_elapsed + (
            self._stage_elapsed if schedule.stage_elapsed_relative else 0
        )
        self.green_elapsed = schedule.green_elapsed + (
            self.green_elapsed if schedule.green_elapsed_relative else 0
        )
        self.phase = schedule.phase
        self._signal = schedule.signals[-1]
        self._last_signals = schedule.signals
        return schedule

    def _simulate_schedule(self, key: tuple) -> _Schedule:
        saved = [getattr(self, name) for name in _SIGNAL_STATE]  # simulated on, then put back
        stage, stage_elapsed, green_elapsed, phase, target = key
        self._stage, self._stage_elapsed, self.green_elapsed = stage, stage_elapsed, green_elapsed
        self.phase, self.target_phase = phase, target
        switches, signals = 0, []
        stage_reset = green_reset = False
        for _ in range(self.ticks_per_decision):
            before = (self._stage, self.phase)
            switches += self._advance_signal()
            # A stage change restarts its clock; a new green phase restarts the green clock.
            stage_reset |= self._stage != before[0]
            green_reset |= self._stage == _GREEN and before[0] != _GREEN
            signals.append(self._signal)
        schedule = _Schedule(
            signals=tuple(signals),
            switches=switches,
            stage=self._stage,
            stage_elapsed=self._stage_elapsed - (0 if stage_reset else stage_elapsed),
            stage_elapsed_relative=not stage_reset,
            green_elapsed=self.green_elapsed - (0 if green_reset else green_elapsed),
            green_elapsed_relative=not green_reset,
            phase=self.phase,
            caps=list(self._cap[np.asarray(signals, dtype=np.int64)]),
        )
        for name, value in zip(_SIGNAL_STATE, saved, strict=True):
            setattr(self, name, value)
        return schedule

    def _advance_signal(self) -> int:
        """Move the signal one tick forward; returns 1 when a change starts this tick."""
        started = 0
        if self._stage == _GREEN:
            if self.target_phase != self.phase and self.green_elapsed >= self._min_green:
                self._stage, self._stage_elapsed, started = _YELLOW, 0, 1
        elif self._stage == _YELLOW and self._stage_elapsed >= self._yellow:
            self._stage, self._stage_elapsed = _ALL_RED, 0
        if self._stage == _ALL_RED and self._stage_elapsed >= self._all_red:
            self._stage, self._stage_elapsed = _GREEN, 0
            self.phase, self.green_elapsed = self.target_phase, 0
        self._stage_elapsed += 1
        if self._stage == _GREEN:
            self.green_elapsed += 1
            self._signal = self.phase
        elif self._stage == _YELLOW:
            self._signal = self.n_phases + self.phase
        else:
            self._signal = 2 * self.n_phases
        return started

    def _update_queues(self) -> None:
        """Queued vehicles per movement: what the CTM holds back now (see module doc).

        Computed on the cells only, as (movements, cells) views of the state: the same
        element-wise operations as over the whole state, so the same bits.
        """
        blocks = self._state.reshape(self._n_mov, self._block)
        cells = blocks[:, 1 : self._n_cells + 1]
        flow = cells * self._fwd_cells
        recv = np.subtract(self._jam_next_cells, blocks[:, 2 : self._n_cells + 2])
        np.multiply(self._back_next_cells, recv, out=recv)
        np.minimum(flow, recv, out=flow)
        np.minimum(flow, self._cap_cells[self._signal], out=flow)
        np.multiply(flow, self._inv_fwd_cells2d, out=flow)
        held = np.subtract(cells, flow, out=flow)
        np.maximum(held, 0.0, out=held)
        per_movement = _add_reduce(held, axis=1)
        self._queues = queues = per_movement + blocks[:, 0]
        self._queue_total = float(_add_reduce(queues))

    def _observation(self) -> np.ndarray:
        obs = np.empty(self._obs_size, dtype=np.float32)
        queues = self._queues
        obs[self._obs_queue] = queues / (queues + self.storage)
        blocks = self._state.reshape(self._n_mov, self._block)
        density = blocks[:, 1 : self._n_cells + 1] * self._inv_jam_cells2d
        np.minimum(density, 1.0, out=obs[self._obs_density].reshape(density.shape))
        obs[self._obs_phase] = 0.0
        obs[self._obs_phase_start + self.current_phase] = 1.0
        obs[self._obs_time_in_phase] = min(
            self.green_elapsed * self.config.tick_s / TIME_IN_PHASE_NORM_S, 1.0
        )
        obs[self._obs_time_of_day] = self.decision / self.decisions_per_episode
        return obs

    # -- read-only views for controllers and tests --------------------------------
    @property
    def current_phase(self) -> int:
        """The green phase, or the phase being changed to during yellow/all-red."""
        return self.phase if self._stage == _GREEN else self.target_phase

    @property
    def in_change(self) -> bool:
        return self._stage != _GREEN

    @property
    def vehicles(self) -> np.ndarray:
        """(n_movements, 1 + n_cells): entry backlog then cells, stop-line cell last."""
        return self._state.reshape(len(self.movements), self._block)[:, :-1].copy()

    @property
    def total_discharged(self) -> float:
        return float(self._state[self._sink_slots].sum())

    def movement_queues(self) -> np.ndarray:
        return self._queues.copy()

    def vehicles_in_links(self) -> float:
        """Vehicles in cells and entry backlogs (not yet discharged)."""
        return float(self._state.sum() - self._state[self._sink_slots].sum())

    def lights_of_last_decision(self) -> np.ndarray:
        """(ticks, n_movements) light codes (RED/YELLOW/GREEN) shown during the last step."""
        return self._lights[np.asarray(self._last_signals, dtype=np.int64)]
