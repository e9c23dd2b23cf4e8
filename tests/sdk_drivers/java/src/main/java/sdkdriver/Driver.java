package sdkdriver;

import com.segment.analytics.Analytics;
import com.segment.analytics.Callback;
import com.segment.analytics.messages.IdentifyMessage;
import com.segment.analytics.messages.Message;
import com.segment.analytics.messages.PageMessage;
import com.segment.analytics.messages.TrackMessage;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;

/**
 * Sends the test's known events through Segment's Java SDK, waits until the SDK has reported every event delivered
 * or failed, and prints one line of JSON saying what it reported.
 *
 * <p>Usage: {@code java -jar sdk-driver.jar <collector url> <write key> <run> [flush queue size]}. The collector
 * URL goes to {@code Analytics.builder(key).endpoint(url)}, the SDK's own setting (it appends /v1/import/). Exit
 * status: 0 every event delivered, 1 the SDK reported failures, 2 bad usage, 3 the SDK did not settle in time.
 */
public final class Driver {
  private static final int SENT = 4;

  private int delivered;
  private int failed;
  private final List<String> errors = new ArrayList<>();
  private final CountDownLatch settled = new CountDownLatch(SENT);

  private final Callback callback =
      new Callback() {
        @Override
        public void success(Message message) {
          synchronized (Driver.this) {
            delivered++;
          }
          settled.countDown();
        }

        @Override
        public void failure(Message message, Throwable throwable) {
          synchronized (Driver.this) {
            failed++;
            errors.add(throwable.getClass().getSimpleName() + ": " + throwable.getMessage());
          }
          settled.countDown();
        }
      };

  public static void main(String[] args) throws InterruptedException {
    if (args.length < 3) {
      System.err.println("usage: java -jar sdk-driver.jar <collector url> <write key> <run> [flush queue size]");
      System.exit(2);
    }
    long settleMs = Long.parseLong(System.getenv().getOrDefault("DRIVER_SETTLE_MS", "120000"));
    int flushQueueSize = args.length > 3 ? Integer.parseInt(args[3]) : 0;
    System.exit(new Driver().run(args[0], args[1], args[2], flushQueueSize, settleMs));
  }

  private int run(String url, String key, String run, int flushQueueSize, long settleMs)
      throws InterruptedException {
    long started = System.nanoTime();
    Analytics.Builder builder = Analytics.builder(key).endpoint(url).callback(callback);
    if (flushQueueSize > 0) {
      builder.flushQueueSize(flushQueueSize);
    }
    Analytics analytics = builder.build();
    String user = "u-" + run;
    analytics.enqueue(IdentifyMessage.builder().userId(user).traits(Map.of("plan", "pro", "run", run)));
    analytics.enqueue(
        TrackMessage.builder("Product Viewed").userId(user).properties(Map.of("product_id", "sku-1", "run", run)));
    analytics.enqueue(
        TrackMessage.builder("Order Completed")
            .userId(user)
            .properties(Map.of("order_id", "o-" + run, "revenue", 42.5, "currency", "EUR", "run", run)));
    analytics.enqueue(PageMessage.builder("Home").userId(user).properties(Map.of("path", "/home", "run", run)));
    analytics.flush();
    // shutdown() waits one second for uploads in flight, then gives up on them: so it comes after the SDK has
    // reported every event (a batch being retried waits 15 s and more between attempts).
    boolean inTime = settled.await(settleMs, TimeUnit.MILLISECONDS);
    analytics.shutdown();
    synchronized (this) {
      System.out.println(json(inTime, (System.nanoTime() - started) / 1e9));
      return !inTime ? 3 : delivered < SENT ? 1 : 0;
    }
  }

  private String json(boolean inTime, double seconds) {
    StringBuilder out = new StringBuilder("{\"sdk\":\"segment\",\"version\":");
    out.append(quote(com.segment.analytics.internal.AnalyticsVersion.get()));
    out.append(",\"sent\":").append(SENT).append(",\"delivered\":").append(delivered);
    out.append(",\"failed\":").append(failed).append(",\"errors\":[");
    for (int i = 0; i < errors.size(); i++) {
      out.append(i > 0 ? "," : "").append(quote(errors.get(i)));
    }
    return out.append("],\"timed_out\":").append(!inTime).append(",\"seconds\":").append(seconds).append('}').toString();
  }

  private static String quote(String text) {
    StringBuilder out = new StringBuilder("\"");
    for (char c : String.valueOf(text).toCharArray()) {
      if (c == '"' || c == '\\') {
        out.append('\\').append(c);
      } else if (c < 0x20) {
        out.append(String.format("\\u%04x", (int) c));
      } else {
        out.append(c);
      }
    }
    return out.append('"').toString();
  }
}
