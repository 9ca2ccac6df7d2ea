// The RTCRtpScriptTransform worker of a media connection (D58; web/src/rtc.js makes one per
// direction).  Sender: each frame the VP8 encoder made gets its data replaced by the next
// frame of the link, asked for over options.port ({pull: true}; the reply is {data:
// ArrayBuffer} or {data: null}: drop the encoder's frame).  Receiver: each frame's data
// goes over options.port, transferred, and the frame is never enqueued (no decoder runs).

onrtctransform = (event) => {
  const transformer = event.transformer;
  const { side, port } = transformer.options;
  if (side === "send") {
    const waiting = []; // resolvers, in order: one reply per pull
    port.onmessage = (e) => {
      const resolve = waiting.shift();
      if (resolve) resolve(e.data && e.data.data instanceof ArrayBuffer ? e.data.data : null);
    };
    transformer.readable
      .pipeThrough(new TransformStream({
        async transform(frame, controller) {
          const data = await new Promise((resolve) => {
            waiting.push(resolve);
            port.postMessage({ pull: true });
          });
          if (!data) return; // nothing to send yet: the encoder's frame is dropped
          frame.data = data;
          controller.enqueue(frame);
        },
      }))
      .pipeTo(transformer.writable)
      .catch(() => {});
  } else {
    transformer.readable
      .pipeTo(new WritableStream({
        write(frame) {
          const data = frame.data;
          port.postMessage({ data }, [data]);
        },
      }))
      .catch(() => {});
  }
};
