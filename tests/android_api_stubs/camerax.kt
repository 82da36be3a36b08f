// androidx.camera.core.ImageProxy (CameraX 1.3+: toBitmap) and ImageInfo.
package androidx.camera.core

interface ImageInfo {
    val rotationDegrees: Int
}

interface ImageProxy : AutoCloseable {
    val imageInfo: ImageInfo
    fun toBitmap(): android.graphics.Bitmap
}
