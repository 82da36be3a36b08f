// Stand-ins with the signatures of android.content.Context, android.content.res.AssetManager and
// AssetFileDescriptor (Java getters appear to Kotlin as properties, as they do here).
package android.content

abstract class Context {
    abstract val assets: android.content.res.AssetManager
    abstract val cacheDir: java.io.File
}
