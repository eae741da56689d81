// The Java side of the compatibility checker's differential test: Apache Avro 1.12 judges
// reader/writer pairs read as JSON lines on stdin, one JSON line out per line in.
//
//   in:  {"id": ..., "reader": SCHEMA, "writer": SCHEMA, "samples": 30}
//        {"id": ..., "schema": SCHEMA}                      (validity only)
//   out: {"id": ..., "reader_error": MSG | "writer_error": MSG}   a schema Avro refuses
//        {"id": ..., "compatible": BOOL, "problems": [{"type", "location", "message"}],
//         "decode": "ok" | "fails", "decode_error": MSG, "resolve_errors": [MSG, ...]}
//        {"id": ..., "valid": BOOL, "error": MSG}
//        "oracle_error": MSG when Java's checker throws (the decoder's verdict is still given)
//
// "decode" is the decoder's verdict, the tie-breaker when checkers disagree. Two views of it:
// "resolve_errors" walks the resolution Java's decoder builds (Resolver.resolve, with aliases
// applied, as GenericDatumReader does) for error actions and enum symbols without a target:
// each is writer data the decoder refuses, whether or not random data reaches it; and random
// data written with the writer schema (RandomData, seeded by the id) is read back with the
// reader schema. "decode" is "fails" when either finds a failure. Built and run by
// scripts/avro_oracle.py.
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.BufferedReader;
import java.io.ByteArrayOutputStream;
import java.io.InputStreamReader;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.IdentityHashMap;
import java.util.List;
import java.util.Map;
import org.apache.avro.Resolver;
import org.apache.avro.Schema;
import org.apache.avro.SchemaCompatibility;
import org.apache.avro.generic.GenericDatumReader;
import org.apache.avro.generic.GenericDatumWriter;
import org.apache.avro.io.BinaryDecoder;
import org.apache.avro.io.BinaryEncoder;
import org.apache.avro.io.DecoderFactory;
import org.apache.avro.io.EncoderFactory;
import org.apache.avro.util.RandomData;

public final class AvroOracle {
  private static final ObjectMapper JSON = new ObjectMapper();

  public static void main(String[] args) throws Exception {
    BufferedReader in =
        new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
    PrintStream out = new PrintStream(System.out, false, StandardCharsets.UTF_8);
    String line;
    while ((line = in.readLine()) != null) {
      if (line.isBlank()) {
        continue;
      }
      JsonNode request = JSON.readTree(line);
      ObjectNode answer = JSON.createObjectNode();
      answer.set("id", request.get("id"));
      try {
        if (request.has("schema")) {
          validity(request, answer);
        } else {
          judge(request, answer);
        }
      } catch (Throwable t) { // one bad line must not stop the other judgements
        answer.put("oracle_error", t.toString());
      }
      out.println(JSON.writeValueAsString(answer));
      out.flush();
    }
  }

  private static Schema parse(JsonNode schema) {
    return new Schema.Parser().parse(schema.toString());
  }

  private static void validity(JsonNode request, ObjectNode answer) {
    try {
      parse(request.get("schema"));
      answer.put("valid", true);
    } catch (RuntimeException e) {
      answer.put("valid", false);
      answer.put("error", String.valueOf(e.getMessage()));
    }
  }

  private static void judge(JsonNode request, ObjectNode answer) {
    Schema reader;
    Schema writer;
    try {
      reader = parse(request.get("reader"));
    } catch (RuntimeException e) {
      answer.put("reader_error", String.valueOf(e.getMessage()));
      return;
    }
    try {
      writer = parse(request.get("writer"));
    } catch (RuntimeException e) {
      answer.put("writer_error", String.valueOf(e.getMessage()));
      return;
    }
    try {
      SchemaCompatibility.SchemaPairCompatibility result =
          SchemaCompatibility.checkReaderWriterCompatibility(reader, writer);
      answer.put("compatible", result.getType()
          == SchemaCompatibility.SchemaCompatibilityType.COMPATIBLE);
      ArrayNode problems = answer.putArray("problems");
      for (SchemaCompatibility.Incompatibility problem :
          result.getResult().getIncompatibilities()) {
        ObjectNode p = problems.addObject();
        p.put("type", problem.getType().name());
        p.put("location", problem.getLocation());
        p.put("message", problem.getMessage());
      }
    } catch (RuntimeException e) { // the checker throws on some pairs; the decoder still judges
      answer.put("oracle_error", e.toString());
    }
    List<String> errors = new ArrayList<>();
    try {
      resolveErrors(Resolver.resolve(writer, reader), new IdentityHashMap<>(), errors);
    } catch (RuntimeException e) {
      errors.add(e.toString());
    }
    ArrayNode resolveErrors = answer.putArray("resolve_errors");
    errors.forEach(resolveErrors::add);
    int samples = request.path("samples").asInt(30);
    long seed = request.get("id").toString().hashCode();
    try {
      decode(reader, writer, samples, seed);
      answer.put("decode", errors.isEmpty() ? "ok" : "fails");
    } catch (Throwable e) { // AvroTypeException, EOF, a StackOverflowError on odd recursion
      answer.put("decode", "fails");
      answer.put("decode_error", e.toString());
    }
  }

  private static void resolveErrors(Resolver.Action action, Map<Resolver.Action, Boolean> seen,
      List<String> errors) {
    if (action == null || seen.put(action, true) != null) {
      return;
    }
    if (action instanceof Resolver.ErrorAction) {
      errors.add(action.toString());
    } else if (action instanceof Resolver.EnumAdjust) {
      Resolver.EnumAdjust adjust = (Resolver.EnumAdjust) action;
      for (int i = 0; i < adjust.adjustments.length; i++) {
        if (adjust.adjustments[i] < 0) {
          errors.add("writer enum symbol " + action.writer.getEnumSymbols().get(i)
              + " has no reader symbol nor default");
        }
      }
    } else if (action instanceof Resolver.Container) {
      resolveErrors(((Resolver.Container) action).elementAction, seen, errors);
    } else if (action instanceof Resolver.RecordAdjust) {
      for (Resolver.Action field : ((Resolver.RecordAdjust) action).fieldActions) {
        resolveErrors(field, seen, errors);
      }
    } else if (action instanceof Resolver.WriterUnion) {
      for (Resolver.Action branch : ((Resolver.WriterUnion) action).actions) {
        resolveErrors(branch, seen, errors);
      }
    } else if (action instanceof Resolver.ReaderUnion) {
      resolveErrors(((Resolver.ReaderUnion) action).actualAction, seen, errors);
    }
  }

  private static void decode(Schema reader, Schema writer, int samples, long seed)
      throws Exception {
    GenericDatumWriter<Object> out = new GenericDatumWriter<>(writer);
    GenericDatumReader<Object> in = new GenericDatumReader<>(writer, reader);
    for (Object datum : new RandomData(writer, samples, seed)) {
      ByteArrayOutputStream bytes = new ByteArrayOutputStream();
      BinaryEncoder encoder = EncoderFactory.get().binaryEncoder(bytes, null);
      out.write(datum, encoder);
      encoder.flush();
      BinaryDecoder decoder = DecoderFactory.get().binaryDecoder(bytes.toByteArray(), null);
      in.read(null, decoder);
      if (!decoder.isEnd()) {
        throw new IllegalStateException("bytes left after the record");
      }
    }
  }
}
