// org.tensorflow.lite.Interpreter as LiteRT (com.google.ai.edge.litert:litert) declares it.
package org.tensorflow.lite

class Interpreter(byteBuffer: java.nio.ByteBuffer, options: Options) : AutoCloseable {
    class Options {
        fun setNumThreads(numThreads: Int): Options = this
    }

    fun run(input: Any, output: Any) {}

    override fun close() {}
}
