package android.content.res

abstract class AssetManager {
    abstract fun open(fileName: String): java.io.InputStream
    abstract fun openFd(fileName: String): AssetFileDescriptor
}

abstract class AssetFileDescriptor : java.io.Closeable {
    abstract val fileDescriptor: java.io.FileDescriptor
    abstract val startOffset: Long
    abstract val declaredLength: Long
}
