"""RealSenseCamera read through pyrealsense2's software device (the real library, no mocks)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

pytest.importorskip("pyrealsense2", exc_type=ImportError)

from shallowpi.hardware.camera import CameraError, CameraTimeout
from shallowpi.hardware.realsense import RealSenseCamera, RealSenseConfig
from shallowpi.hardware.realsense_software import SoftwareRealSense

W, H = 64, 48


def make(depth: bool = True, **kw: object) -> tuple[SoftwareRealSense, RealSenseCamera]:
    device = SoftwareRealSense("SW-1", W, H, fps=30, depth=depth)
    config = RealSenseConfig("head", "SW-1", W, H, 30, depth=depth, warmup_frames=0, **kw)
    return device, RealSenseCamera(config, open_device=device.open_device)


def pattern(i: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(i)
    return rng.integers(0, 255, (H, W, 3), dtype=np.uint8), np.full((H, W), 500 + i, np.uint16)


def test_frames_arrive_in_order_with_device_timestamps_and_depth() -> None:
    device, cam = make(align_depth=False)
    with cam:
        last = None
        for i in range(8):
            image, depth = pattern(i)
            device.inject(image, depth, timestamp_ms=1000.0 + 40.0 * i)
            frame = cam.latest(newer_than=last)
            last = frame.sequence
            assert frame.sequence == i
            assert frame.capture_time_s == pytest.approx(1.0 + 0.04 * i)
            np.testing.assert_array_equal(frame.image, image)
            np.testing.assert_array_equal(frame.depth, depth)
            assert frame.depth_m()[0, 0] == pytest.approx((500 + i) / 1000.0)
        assert cam.stats.dropped == 0


@pytest.mark.parametrize("lost", [(3,), (0, 1, 2)], ids=["one depth frame lost", "depth starts late"])
def test_each_color_frame_keeps_its_own_depth_after_a_depth_frame_is_lost(lost) -> None:
    """The first depth frame not older than half a period was taken: after one lost depth
    frame (or a depth stream started after the color one) every later color frame came
    with the next period's depth, for good, and nothing counted it. A color frame whose
    depth never came is not published (a drop); the others keep their own."""
    device, cam = make(align_depth=False)
    with cam:
        seen = {}
        for i in range(10):
            image, depth = pattern(i)
            device.inject(image, depth, lose_depth=i in lost)
            time.sleep(0.05)
            if i not in lost:
                frame = cam.latest(newer_than=max(seen, default=None))
                seen[frame.sequence] = int(frame.depth[0, 0])
        assert seen == {i: 500 + i for i in range(10) if i not in lost}
        assert cam.stats.dropped == (len(lost) if 0 not in lost else 0)  # a late start is no gap


def test_aligned_depth_matches_when_streams_share_a_pose() -> None:
    device, cam = make(align_depth=True)
    with cam:
        image, depth = pattern(3)
        device.inject(image, depth)
        frame = cam.latest()
    # Reprojection through identical intrinsics keeps nearly every pixel (edges may go empty).
    assert frame.depth.shape == (H, W)
    assert np.mean(frame.depth == depth) > 0.9
    assert set(np.unique(frame.depth)) <= {0, 503}


def test_gaps_in_frame_numbers_count_as_drops() -> None:
    device, cam = make(depth=False)
    with cam:
        last = None
        for number in (0, 1, 4, 5, 9):
            device.inject(pattern(number)[0], frame_number=number)
            last = cam.latest(newer_than=last).sequence
        assert last == 9
        assert cam.stats.dropped == 2 + 3
        assert cam.stats.frames == 5


def test_no_frame_times_out_naming_the_camera() -> None:
    _, cam = make(depth=False, timeout_s=0.3)
    with cam:
        t0 = time.monotonic()
        with pytest.raises(CameraTimeout, match="camera 'head'"):
            cam.latest()
        assert 0.25 < time.monotonic() - t0 < 2.0


def test_stale_frame_raises_and_fresh_one_passes() -> None:
    device, cam = make(depth=False, timeout_s=0.3)
    with cam:
        device.inject(pattern(0)[0])
        cam.latest()
        time.sleep(0.35)
        with pytest.raises(CameraTimeout, match=r"camera 'head' frame 0 is stale"):
            cam.latest(max_age_s=0.1)
        device.inject(pattern(1)[0])
        assert cam.latest(max_age_s=0.1).sequence == 1


def test_reopens_after_silence_and_resumes() -> None:
    device, cam = make(depth=True, max_failures=3, align_depth=False)
    with cam:
        device.inject(*pattern(0))
        cam.latest()
        deadline = time.monotonic() + 5.0
        while cam.stats.reopens == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert cam.stats.reopens >= 1
        # Asked for nothing fresh (a control loop judging the age itself), the frame from
        # before the silence comes back at once: no wait of `timeout_s` inside the loop.
        start = time.monotonic()
        np.testing.assert_array_equal(cam.latest().image, pattern(0)[0])
        assert time.monotonic() - start < 0.5
        # A re-plugged camera restarts its counter; that is not a drop.
        image, depth = pattern(1)
        device.inject(image, depth, frame_number=0, timestamp_ms=5000.0)
        frame = cam.latest(max_age_s=1.0)
        np.testing.assert_array_equal(frame.image, image)
        assert cam.stats.dropped == 0


def test_unknown_serial_is_one_line_error() -> None:
    device = SoftwareRealSense("SW-1", W, H)
    cam = RealSenseCamera(
        RealSenseConfig("wrist", "NOPE", W, H, warmup_frames=0), device.open_device
    )
    with pytest.raises(CameraError, match="RealSense NOPE not found") as info:
        cam.start()
    assert "\n" not in str(info.value)


def test_unsupported_resolution_lists_what_the_device_offers() -> None:
    device = SoftwareRealSense("SW-1", W, H)
    cam = RealSenseCamera(
        RealSenseConfig("wrist", "SW-1", 640, 480, warmup_frames=0), device.open_device
    )
    with pytest.raises(CameraError, match=r"no color stream 640x480@30.*offers: 64x48@30"):
        cam.start()


def test_warm_up_drops_the_first_frames() -> None:
    device = SoftwareRealSense("SW-1", W, H)
    cam = RealSenseCamera(
        RealSenseConfig("head", "SW-1", W, H, warmup_frames=3), device.open_device
    )
    stop = threading.Event()

    def stream() -> None:
        while not stop.is_set():
            device.inject(pattern(device.frame_number)[0])
            time.sleep(0.02)

    feeder = threading.Thread(target=stream)
    feeder.start()
    try:
        with cam:
            assert cam.latest().sequence >= 3
    finally:
        stop.set()
        feeder.join()


def test_warm_up_outlasts_a_color_frame_whose_depth_never_came() -> None:
    """Depth starts a frame after color (as the sensors start in turn): the first color
    frame has no depth to pair with. Warm-up failed at once, blaming the cable."""
    device = SoftwareRealSense("SW-1", W, H, fps=30, depth=True)
    cam = RealSenseCamera(RealSenseConfig("head", "SW-1", W, H, 30, depth=True, align_depth=False,
                                          warmup_frames=3), device.open_device)

    def stream() -> None:
        time.sleep(0.2)  # start() is waiting by now
        for i in range(12):
            device.inject(*pattern(i), lose_depth=i == 0)
            time.sleep(1 / 30)

    feeder = threading.Thread(target=stream)
    feeder.start()
    try:
        with cam:
            assert cam.latest().sequence >= 4  # frame 0 unpaired, 1-3 warmed up
    finally:
        feeder.join()


def test_a_driver_error_while_opening_is_one_line() -> None:
    """Only the sensors' open and start were caught: a control the camera refuses (held by
    another process, or mid-reset) reached the user as a RuntimeError traceback. Here the
    auto-exposure control is read-only, so setting it raises."""
    import pyrealsense2 as rs

    device = rs.software_device()
    device.register_info(rs.camera_info.serial_number, "SW-RO")
    sensor = device.add_sensor("RGB Camera")
    sensor.add_read_only_option(rs.option.auto_exposure_priority, 1.0)
    stream = rs.video_stream()
    stream.type, stream.index, stream.uid = rs.stream.color, 0, 1
    stream.width, stream.height, stream.fps, stream.bpp, stream.fmt = W, H, 30, 3, rs.format.rgb8
    intrinsics = rs.intrinsics()
    intrinsics.width, intrinsics.height = W, H
    stream.intrinsics = intrinsics
    sensor.add_video_stream(stream, True)
    cam = RealSenseCamera(RealSenseConfig("head", "SW-RO", W, H, warmup_frames=0), lambda serial: device)
    with pytest.raises(CameraError, match=r"^camera 'head' \(RealSense SW-RO\) could not start: .*read-only.*; "
                                          r"is another process using it\?$"):
        cam.start()
    assert not cam.is_running


def test_warm_up_without_frames_times_out() -> None:
    device = SoftwareRealSense("SW-1", W, H)
    config = RealSenseConfig("head", "SW-1", W, H, warmup_frames=2, timeout_s=0.2)
    with pytest.raises(CameraTimeout, match="camera 'head' gave no frame during warm-up"):
        RealSenseCamera(config, device.open_device).start()


def test_auto_exposure_may_not_lower_the_frame_rate() -> None:
    # The factory setting lets auto-exposure halve the rate in dim light with consecutive
    # frame numbers: no drop counted, pictures at half the rows' rate.
    import pyrealsense2 as rs

    device, cam = make(depth=False)
    assert device.color_sensor.get_option(rs.option.auto_exposure_priority) == 1
    with cam:
        assert device.color_sensor.get_option(rs.option.auto_exposure_priority) == 0


def test_a_frame_stamped_in_global_time_is_aged_from_its_exposure_not_its_arrival(caplog) -> None:
    """A D400 in librealsense's global time stamps each frame on the host's clock: the
    frame's time on `time.monotonic()` is its exposure, 80 ms before it reached the host
    here (exposure and USB transfer), and 100 ms where the metadata says the readout began
    20 ms after the middle of the exposure. Frames stamped on the device's own clock count
    from arrival, and so do frames whose global stamps are all an hour off (the host's clock
    stepped), once that is told from a late frame."""
    import pyrealsense2 as rs

    device, cam = make()

    def read(**inject: object) -> tuple[float, float, float]:
        """(monotonic before the capture, the frame's host time, monotonic once read)."""
        before = time.monotonic()  # first: the caller stamped the frame just before (pattern() may take ms)
        image, depth = pattern(0)
        number = device.inject(image, depth, **inject)
        frame = cam.latest(newer_than=number - 1)
        assert frame.sequence == number
        return before, frame.host_time_s, time.monotonic()

    with cam:
        before, exposed, after = read(timestamp_ms=(time.time() - 0.08) * 1000, global_time=True)
        assert before - 0.08 - 0.005 <= exposed <= after - 0.08 + 0.005
        meta = rs.frame_metadata_value
        device.color_sensor.set_metadata(meta.sensor_timestamp, 1_000_000)
        device.color_sensor.set_metadata(meta.frame_timestamp, 1_020_000)  # us: readout 20 ms later
        before, exposed, after = read(timestamp_ms=(time.time() - 0.08) * 1000, global_time=True)
        assert before - 0.1 - 0.005 <= exposed <= after - 0.1 + 0.005
        for _ in range(8):  # a camera running for a while: its window of stamp ages is settled
            read(timestamp_ms=(time.time() - 0.08) * 1000, global_time=True)
        with caplog.at_level("WARNING", logger="shallowpi.hardware.realsense"):
            # The host's clock stepped an hour: every frame's stamp is an hour off from here. The
            # first seven look an hour late (as a late frame would: stale, never taken as fresh)
            # until they outnumber the ten frames before the step; from then on ages count from
            # the step: the frames on time from their arrival.
            for i in range(10):
                before, arrived, after = read(timestamp_ms=(time.time() - 3600) * 1000, global_time=True)
                if i < 7:
                    assert before - 3600 - 0.5 <= arrived <= after - 3600 + 0.5
                else:
                    assert before <= arrived <= after
            # Late after the step: 2 s behind the others, so 2 s old.
            before, exposed, after = read(timestamp_ms=(time.time() - 3602) * 1000, global_time=True)
            assert before - 2.0 - 0.05 <= exposed <= after - 2.0 + 0.05  # give or take the frames' transfers
        assert sum("frame after frame (was the clock stepped?)" in r.getMessage() for r in caplog.records) == 1
    device, cam = make()  # read() uses these from here on
    with cam:
        before, arrived, after = read(timestamp_ms=5000.0)  # the device's clock: not the host's
        assert before <= arrived <= after


def test_a_host_clock_step_is_not_a_camera_gone_silent() -> None:
    """NTP stepping the host's clock (a Jetson without a clock battery, synced after boot)
    ages a global-time camera's next frames by the step (stale for a moment, as StampAges
    means), but they did arrive: the robot's observe() had judged silence by that age and
    ended a recording or a deployment with "camera 'front' has sent no frame for 3600 s"."""
    from dxl_fixtures import emulated
    from shallowpi.robots.calibration import RobotCalibration
    from shallowpi.robots.dynamixel_robot import DynamixelRobot

    step_s = [0.0]  # how far the host's clock stepped ahead of the camera's stamps
    with emulated("arm") as (spec, _chains):
        device = SoftwareRealSense("SW-front", W, H, fps=30, depth=False)
        cam = RealSenseCamera(RealSenseConfig("front", "SW-front", W, H, 30, depth=False, warmup_frames=0),
                              open_device=device.open_device)
        robot = DynamixelRobot(spec, RobotCalibration("uncalibrated", spec.name), cameras={"front": cam})
        stop = threading.Event()

        def feed() -> None:
            i = 0
            while not stop.is_set():
                device.inject(pattern(i)[0], timestamp_ms=(time.time() - 0.03 - step_s[0]) * 1000, global_time=True)
                i += 1
                time.sleep(1 / 30)

        feeder = threading.Thread(target=feed, daemon=True)
        with cam:
            feeder.start()
            robot.connect()
            try:
                for _ in range(15):  # a camera running for a while: its window of stamp ages settled
                    robot.observe()
                    time.sleep(1 / 30)
                step_s[0] = 3600.0
                time.sleep(0.1)
                stale = robot.observe().frames["front"]  # no CameraTimeout
                assert time.monotonic() - stale.time_s > 3000  # still aged by its stamp: held as stale
                stop.set()
                feeder.join()
                time.sleep(robot.camera_timeout_s + 0.2)
                with pytest.raises(CameraTimeout, match="has sent no frame for"):  # silence is still a fault
                    robot.observe()
            finally:
                stop.set()
                robot.disconnect()


def test_a_late_frame_just_after_an_open_is_late_not_a_clock_step() -> None:
    """The window of stamp ages starts empty at each (re)open: a first frame 2.5 s late was
    its own median, taken for a clock step, and read as fresh (0 s)."""
    from shallowpi.hardware.realsense import StampAges

    ages = StampAges()
    assert [ages.age(late) for late in (2.5, 2.5, 0.03)] == [2.5, 2.5, 0.03] and not ages.stepped


def test_a_frame_that_reached_the_host_late_is_as_old_as_its_stamp_says(caplog) -> None:
    """A global stamp over 1 s before the frame's arrival was not believed and the frame's age
    counted from its arrival: exposed 1.2 s or 3 s before it reached the host (the host or its
    USB stalled), it read 0.05 s old, so the executor's stale-frame watchdog fed the policy
    that picture as current and the recorder's stale-row count missed it. One frame late among
    frames on time is late, however late: a stepped clock moves them all."""
    device, cam = make(depth=False, timeout_s=0.3)

    def inject(late_s: float) -> tuple[float, float, float]:
        """(monotonic before the capture, the frame's host time, monotonic once read)."""
        before = time.monotonic()
        number = device.inject(pattern(0)[0], timestamp_ms=(time.time() - late_s) * 1000, global_time=True)
        frame = cam.latest(newer_than=number - 1)
        assert frame.sequence == number
        return before, frame.host_time_s, time.monotonic()

    with cam:
        for _ in range(5):
            inject(0.03)
        with caplog.at_level("WARNING", logger="shallowpi.hardware.realsense"):
            for late_s in (1.2, 3.0):
                before, exposed, after = inject(late_s)
                assert before - late_s - 0.005 <= exposed <= after - late_s + 0.005
                with pytest.raises(CameraTimeout, match=r"camera 'head' frame \d+ is stale"):
                    cam.latest(max_age_s=0.5)  # the executor's watchdog: it holds rather than act on it
            before, exposed, after = inject(0.03)  # on time again: fresh
            assert before - 0.03 - 0.005 <= exposed <= after - 0.03 + 0.005
            assert cam.latest(max_age_s=0.5).host_time_s == exposed
        late = [r.getMessage() for r in caplog.records if "after its exposure" in r.getMessage()]
        assert len(late) == 1 and "1.20 s after its exposure" in late[0]  # once for the run of late frames


def test_a_frame_that_comes_after_a_newer_one_is_not_published_over_it(caplog) -> None:
    """Frames out of order (4 before 3) were each published as they came: the older picture
    replaced the newer one, and the gaps going back and forth counted 4 drops where the
    published frames skipped 2 numbers. A frame at or behind the newest published is dropped
    (`stats.late`); its number stays counted as a drop (the loop never had that picture in its
    time). A counter that goes far back, or keeps behind, restarted: published again."""
    device, cam = make(depth=False)

    def inject(number: int) -> None:
        """Inject frame `number` and give the reader time to publish it (one not published
        leaves the count as it was: 0.3 s, then the next frame; the queue keeps their order)."""
        seen = cam.stats.frames
        device.inject(pattern(number)[0], frame_number=number)
        deadline = time.monotonic() + 0.3
        while cam.stats.frames == seen and time.monotonic() < deadline:
            time.sleep(0.002)

    with cam:
        published = []
        with caplog.at_level("WARNING", logger="shallowpi.hardware.camera"):
            for number in (0, 1, 2, 4, 3, 5, 6, 8, 7, 9):
                inject(number)
                frame = cam.latest()
                np.testing.assert_array_equal(frame.image, pattern(frame.sequence)[0])
                published.append(frame.sequence)
        assert published == [0, 1, 2, 4, 4, 5, 6, 8, 8, 9]  # never back in time
        assert (cam.stats.frames, cam.stats.dropped, cam.stats.late) == (8, 2, 2)
        assert sum("came after frame" in r.getMessage() for r in caplog.records) == 1
        inject(0)  # far back: the device restarted its counter (no re-open): its frames go on
        assert cam.latest().sequence == 0
        for number in (1, 2, 3, 0, 1, 2):  # close behind, three in a row: restarted too
            inject(number)
        assert cam.latest().sequence == 2
        assert (cam.stats.frames, cam.stats.dropped, cam.stats.late) == (13, 2, 4)


@pytest.mark.parametrize("align_depth", [False, True], ids=["raw", "aligned"])
def test_a_d405_gives_color_and_depth_from_one_sensor(align_depth) -> None:
    """A D405 streams color and depth from its one stereo module: opening that sensor once
    per stream failed ("already opened"), so depth could not start on it at all."""
    device = SoftwareRealSense("SW-405", W, H, fps=30, depth=True, one_sensor=True)
    cam = RealSenseCamera(RealSenseConfig("wrist", "SW-405", W, H, 30, depth=True, align_depth=align_depth,
                                          warmup_frames=0), open_device=device.open_device)
    with cam:
        last = None
        for i in range(4):
            image, depth = pattern(i)
            device.inject(image, depth)
            frame = cam.latest(newer_than=last)
            last = frame.sequence
            assert frame.sequence == i
            np.testing.assert_array_equal(frame.image, image)
            if align_depth:  # identical intrinsics: nearly every pixel kept, as with two sensors
                assert np.mean(frame.depth == depth) > 0.9 and set(np.unique(frame.depth)) <= {0, 500 + i}
            else:
                np.testing.assert_array_equal(frame.depth, depth)
        assert cam.stats.dropped == 0
