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
    20 ms after the middle of the exposure. Frames stamped on the device's own clock, or
    with a global stamp an hour off (the host's clock stepped), count from arrival."""
    import pyrealsense2 as rs

    device, cam = make()

    def read(**inject: object) -> tuple[float, float, float]:
        """(monotonic before the capture, the frame's host time, monotonic once read)."""
        image, depth = pattern(0)
        before = time.monotonic()
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
        with caplog.at_level("WARNING", logger="shallowpi.hardware.realsense"):
            for _ in range(2):
                before, arrived, after = read(timestamp_ms=(time.time() - 3600) * 1000, global_time=True)
                assert before <= arrived <= after
        assert sum("over 1 s from the host's clock" in r.getMessage() for r in caplog.records) == 1
    device, cam = make()  # read() uses these from here on
    with cam:
        before, arrived, after = read(timestamp_ms=5000.0)  # the device's clock: not the host's
        assert before <= arrived <= after


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
