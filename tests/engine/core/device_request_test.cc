#include "engine/core/device_request.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace sparkle {
namespace {

TEST(DeviceRequest, ParsesEveryForm) {
  EXPECT_EQ(*ParseDeviceRequest("auto"), DeviceRequest::Auto());
  EXPECT_EQ(*ParseDeviceRequest("cpu"), DeviceRequest::Cpu());
  EXPECT_EQ(*ParseDeviceRequest("gpu"), DeviceRequest::AnyGpu());
  EXPECT_EQ(*ParseDeviceRequest("gpu:0"), DeviceRequest::Gpu(0));
  EXPECT_EQ(*ParseDeviceRequest("gpu:17"), DeviceRequest::Gpu(17));
  for (const char* text : {"auto", "cpu", "gpu", "gpu:3"}) {
    EXPECT_EQ(ParseDeviceRequest(text)->ToString(), text);
  }
}

TEST(DeviceRequest, RejectsAnythingElse) {
  for (const char* text : {"", "GPU", "tpu", "gpu:", "gpu:-1", "gpu:+1", "gpu:1x", "gpu:1024",
                           "gpu:99999999999", "gpu0", "cpu:0", " auto"}) {
    absl::StatusOr<DeviceRequest> r = ParseDeviceRequest(text);
    ASSERT_FALSE(r.ok()) << text;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << text;
    EXPECT_THAT(r.status().message(), ::testing::HasSubstr("auto, cpu, gpu or gpu:<index>"));
  }
}

}  // namespace
}  // namespace sparkle
