// sparkle_bench metrics_record: the cost of recording one request (InferenceStats and the
// Prometheus metrics, as InferenceService's done callback does), in-process, without gRPC or
// compute, so that the figure is not lost in the noise of a loaded machine.
#pragma once

namespace sparkle::bench {

// Prints ns per recorded request (stats only, stats + metrics) on 1 and 2 threads, min/median/
// max over `rounds`. Returns the process exit code.
int MetricsRecord(int rounds);

}  // namespace sparkle::bench
